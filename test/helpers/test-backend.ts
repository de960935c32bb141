import { selectBackend, type BackendPreference } from "../../model/tfjs/backend.js";
import { BackendUnavailableError } from "../../model/errors.js";

/** wasm as the brief asks, the plain JS backend where wasm cannot start; selected quietly. */
export async function wasmOrCpuBackend(): Promise<BackendPreference> {
  const quiet = (): void => undefined;
  try {
    return (await selectBackend("wasm", { log: quiet })).backend as BackendPreference;
  } catch (error) {
    if (!(error instanceof BackendUnavailableError)) throw error;
    return (await selectBackend("cpu", { log: quiet })).backend as BackendPreference;
  }
}
