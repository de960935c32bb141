/**
 * File name endings listed as images, case-insensitively, by `score`, `plan` and the drop
 * folder alike. Only listing goes by name: decoding goes by content, so a PNG named .jpg is
 * scored and a text file named .jpg becomes an error record rather than being skipped.
 */
export const IMAGE_EXTENSIONS: readonly string[] = [".jpg", ".jpeg", ".png", ".webp"];

/** Whether a key names an image by its extension, in any case. */
export function isImageKey(key: string): boolean {
  const lower = key.toLowerCase();
  return IMAGE_EXTENSIONS.some((extension) => lower.endsWith(extension));
}
