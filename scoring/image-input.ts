/** One image to score: its key (relative to the input), label and a way to read its bytes. */
export interface ImageInput {
  key: string;
  label: number | null;
  read(): Promise<Uint8Array>;
}
