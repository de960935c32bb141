/**
 * The channel columns of the paper's Table 1 (Szegedy et al. 2014), as ../shared/PROTOCOL.md
 * transcribes them: [#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, output size].
 */
export const TABLE_1_INCEPTION: readonly (readonly [string, number, number, number, number, number, number, string])[] = [
  ["3a", 64, 96, 128, 16, 32, 32, "28x28x256"],
  ["3b", 128, 128, 192, 32, 96, 64, "28x28x480"],
  ["4a", 192, 96, 208, 16, 48, 64, "14x14x512"],
  ["4b", 160, 112, 224, 24, 64, 64, "14x14x512"],
  ["4c", 128, 128, 256, 24, 64, 64, "14x14x512"],
  ["4d", 112, 144, 288, 32, 64, 64, "14x14x528"],
  ["4e", 256, 160, 320, 32, 128, 128, "14x14x832"],
  ["5a", 256, 160, 320, 32, 128, 128, "7x7x832"],
  ["5b", 384, 192, 384, 48, 128, 128, "7x7x1024"],
];

/** conv1 7x7/2 -> 112x112x64; conv2 (1x1 reduce 64, 3x3 192) -> 56x56x192. */
export const TABLE_1_STEM = { conv1: "112x112x64", conv2Reduce: 64, conv2: 192, conv2Output: "56x56x192" } as const;
