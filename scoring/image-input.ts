/**
 * Default byte cap on one input object: 50 MiB, the drop folder's cap. A 60-megapixel JPEG at
 * high quality is ~20-30 MB, so real photos pass; 8 reads ahead at the cap stay under 0.5 GiB.
 */
export const DEFAULT_INPUT_MAX_BYTES = 50 * 1024 * 1024;

/** One image to score: its key (relative to the input), label and a way to read its bytes. */
export interface ImageInput {
  key: string;
  label: number | null;
  read(): Promise<Uint8Array>;
}
