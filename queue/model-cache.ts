import type { Engine, ModelInfo } from "../model/engine.js";
import type { EngineChoice } from "../model/load.js";
import type { Flavour } from "../model/preprocess.js";
import { PermanentMessageError } from "./message-errors.js";

/** A model ready to score, as model/load.ts returns it. */
export interface LoadedModel {
  readonly engine: Engine;
  readonly info: ModelInfo;
}

/** Loads a model file (path or s3:// URL) with an engine; `preprocess` names the input convention of a graph not recognised. */
export type LoadModel = (url: string, engine: EngineChoice, preprocess?: Flavour) => Promise<LoadedModel>;

/**
 * What identifies the file's stored bytes now (storage/object-version.ts), or undefined when
 * that cannot be told; a different answer than at load means the file was replaced.
 */
export type ModelVersion = (url: string) => Promise<string | undefined>;

/** A model as a run names it: file and, for a graph not recognised, its input convention. */
export interface ModelRequest {
  readonly url: string;
  readonly preprocess?: Flavour | null;
  /** The sha256 the run was planned with; a copy that has another is reloaded, a fresh one refused. */
  readonly sha256?: string;
}

interface Entry {
  readonly model: Promise<LoadedModel>;
  /** The file's version taken just before it was read (undefined: not known). */
  readonly version: string | undefined;
}

/**
 * Loaded models by engine and URL, least recently used first, so a worker that serves one run
 * loads its models once. Models in use by the current message are never evicted, so an
 * ensemble larger than the cache still runs. A file replaced at the same URL (seen by
 * `versionOf`, or by a sha256 other than the one asked for) is read again: a cached copy is
 * never taken for what is stored now.
 */
export class ModelCache {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly capacity: number,
    private readonly load: LoadModel,
    /** Default: none, the cached copy is kept until evicted or its sha256 differs from the one asked. */
    private readonly versionOf: ModelVersion = async () => undefined,
  ) {}

  /**
   * The requested models. One whose freshly read file has another sha256 than the request's
   * rejects with PermanentMessageError: no later delivery can read other bytes there.
   */
  async acquire(requests: readonly ModelRequest[], engine: EngineChoice): Promise<LoadedModel[]> {
    const keys = requests.map(({ url, preprocess }) => `${engine}\u0000${preprocess ?? ""}\u0000${url}`);
    const models: LoadedModel[] = [];
    for (const [i, key] of keys.entries()) {
      const request = requests[i] as ModelRequest;
      const version = await this.versionOf(request.url);
      let { model, fresh } = await this.entry(key, request, engine, version);
      if (request.sha256 !== undefined && model.info.sha256 !== request.sha256 && !fresh) {
        // The copy in memory is not what the run names: what is stored now may be.
        await this.drop(key);
        ({ model, fresh } = await this.entry(key, request, engine, version));
      }
      if (request.sha256 !== undefined && model.info.sha256 !== request.sha256) {
        throw new PermanentMessageError(
          `model ${request.url} has sha256 ${model.info.sha256} as read from storage now, but its run was planned with ${request.sha256}: ` +
            "the file was replaced after plan; put the planned file back, or plan the run again",
        );
      }
      models.push(model);
    }
    await this.evict(new Set(keys));
    return models;
  }

  /** The cached entry for `key` unless its file's version changed; otherwise a fresh load. */
  private async entry(key: string, request: ModelRequest, engine: EngineChoice, version: string | undefined): Promise<{ model: LoadedModel; fresh: boolean }> {
    const cached = this.entries.get(key);
    if (cached !== undefined && (version === undefined || cached.version === undefined || version === cached.version)) {
      this.entries.delete(key);
      this.entries.set(key, cached);
      return { model: await cached.model, fresh: false };
    }
    if (cached !== undefined) await this.drop(key);
    const model = this.load(request.url, engine, request.preprocess ?? undefined);
    // A failed load must not stay cached: the next delivery should try again.
    model.catch(() => {
      if (this.entries.get(key)?.model === model) this.entries.delete(key);
    });
    this.entries.set(key, { model, version });
    return { model: await model, fresh: true };
  }

  private async drop(key: string): Promise<void> {
    const entry = this.entries.get(key);
    this.entries.delete(key);
    await (await entry?.model.catch(() => undefined))?.engine.dispose();
  }

  private async evict(inUse: ReadonlySet<string>): Promise<void> {
    for (const [key, entry] of this.entries) {
      if (this.entries.size <= this.capacity) break;
      if (inUse.has(key)) continue;
      this.entries.delete(key);
      await (await entry.model).engine.dispose();
    }
  }

  async disposeAll(): Promise<void> {
    const entries = [...this.entries.values()];
    this.entries.clear();
    for (const entry of entries) await (await entry.model.catch(() => undefined))?.engine.dispose();
  }
}
