// The one door into onnxruntime's graph edits: the engine rewrites the LRNs of the file and
// has the CPU session built, edited and checked against the file as stored; the rest of the
// folder is theirs (README.md beside this file says what it relies on inside onnxruntime).
export { createCheckedCpuSession } from "./checked-session.js";
export type { CheckedEditsOptions, CheckedSession } from "./checked-session.js";
export type { CpuSessionOptions } from "./layout.js";
export { CACHE_DIR_ENV, PROBE_CACHE_ENV, probeCacheFolder } from "./probe-cache.js";
export { rewriteSlowNodes } from "./lrn-rewrite.js";
export type { LrnChain, RewriteReport } from "./lrn-rewrite.js";
