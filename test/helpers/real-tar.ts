import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";

/*
 * Tar archives written by the tools people use, never by the code under test: GNU tar in each
 * of its formats, and Python's tarfile (pax by default, as WebDataset's writers use).
 */

const run = promisify(execFile);

export type GnuFormat = "gnu" | "ustar" | "pax";

/** `tar --format=FORMAT -cf` of `names` (paths relative to `dir`), optionally gzipped; returns its bytes. */
export async function gnuTar(path: string, format: GnuFormat, dir: string, names: readonly string[], options: { gzip?: boolean } = {}): Promise<Buffer> {
  await run("tar", [`--format=${format}`, options.gzip ? "-czf" : "-cf", path, "-C", dir, "--", ...names]);
  return readFile(path);
}

/** One member for {@link pythonTar}: a file's bytes (`from`) or a short text (`text`), at `name`. */
export type PythonMember = { readonly name: string; readonly from: string } | { readonly name: string; readonly text: string };

const PYTHON_WRITER = `
import io, json, sys, tarfile
out, members = sys.argv[1], json.loads(sys.stdin.read())
with tarfile.open(out, "w") as tar:
    for member in members:
        if "from" in member:
            tar.add(member["from"], arcname=member["name"])
        else:
            data = member["text"].encode("utf-8")
            info = tarfile.TarInfo(member["name"])
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
`;

/** An archive written by python3's tarfile (its default format, pax); returns its bytes. */
export async function pythonTar(path: string, members: readonly PythonMember[]): Promise<Buffer> {
  const child = run("python3", ["-c", PYTHON_WRITER, path]);
  child.child.stdin?.end(JSON.stringify(members));
  await child;
  return readFile(path);
}
