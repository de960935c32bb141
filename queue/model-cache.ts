import type { Engine, ModelInfo } from "../model/engine.js";
import type { EngineChoice } from "../model/load.js";
import type { Flavour } from "../model/preprocess.js";

/** A model ready to score, as model/load.ts returns it. */
export interface LoadedModel {
  readonly engine: Engine;
  readonly info: ModelInfo;
}

/** Loads a model file (path or s3:// URL) with an engine; `preprocess` names the input convention of a graph not recognised. */
export type LoadModel = (url: string, engine: EngineChoice, preprocess?: Flavour) => Promise<LoadedModel>;

/** A model as a run names it: file and, for a graph not recognised, its input convention. */
export interface ModelRequest {
  readonly url: string;
  readonly preprocess?: Flavour | null;
}

/**
 * Loaded models by engine and URL, least recently used first, so a worker that serves one run
 * loads its models once. Models in use by the current message are never evicted, so an
 * ensemble larger than the cache still runs.
 */
export class ModelCache {
  private readonly entries = new Map<string, Promise<LoadedModel>>();

  constructor(
    private readonly capacity: number,
    private readonly load: LoadModel,
  ) {}

  async acquire(requests: readonly ModelRequest[], engine: EngineChoice): Promise<LoadedModel[]> {
    const keys = requests.map(({ url, preprocess }) => `${engine}\u0000${preprocess ?? ""}\u0000${url}`);
    const models: LoadedModel[] = [];
    for (const [i, key] of keys.entries()) {
      let entry = this.entries.get(key);
      if (entry === undefined) {
        const { url, preprocess } = requests[i] as ModelRequest;
        entry = this.load(url, engine, preprocess ?? undefined);
        // A failed load must not stay cached: the next delivery should try again.
        entry.catch(() => this.entries.delete(key));
      } else {
        this.entries.delete(key);
      }
      this.entries.set(key, entry);
      models.push(await entry);
    }
    await this.evict(new Set(keys));
    return models;
  }

  private async evict(inUse: ReadonlySet<string>): Promise<void> {
    for (const [key, entry] of this.entries) {
      if (this.entries.size <= this.capacity) break;
      if (inUse.has(key)) continue;
      this.entries.delete(key);
      await (await entry).engine.dispose();
    }
  }

  async disposeAll(): Promise<void> {
    const entries = [...this.entries.values()];
    this.entries.clear();
    for (const entry of entries) await (await entry.catch(() => undefined))?.engine.dispose();
  }
}
