import { describe, expect, it } from "vitest";

import { CROP_NAMES, SCALES } from "../../model/image/crop-types.js";
import type { Crop, Scheme } from "../../model/image/crop-types.js";
import { CROPS_PER_IMAGE, cropPlan, cropsForCount, formatCropPlanJson, schemeCropIndices } from "../../model/image/crops.js";
import { ConfigurationError } from "../../model/errors.js";
import { uniqueCropWindows } from "../../model/image/sampling.js";

/** Expected geometry straight from PROTOCOL.md "Geometry", with BigInt so the floor is exact. */
function expectedCrop(width: number, height: number, n: number): Crop {
  const landscape = width >= height;
  const short = BigInt(Math.min(width, height));
  const long = BigInt(Math.max(width, height));
  const scale = SCALES[Math.floor(n / 36)]!;
  const L = Number((BigInt(scale) * long) / short);
  const squareIndex = Math.floor(n / 12) % 3;
  const crop = CROP_NAMES[Math.floor(n / 2) % 6]!;
  const mirror = n % 2 === 1;
  const along = [0, Math.floor((L - scale) / 2), L - scale][squareIndex]!;
  const d = scale - 224;
  const corner: Record<string, [number, number]> = {
    tl: [0, 0],
    tr: [d, 0],
    bl: [0, d],
    br: [d, d],
    center: [d / 2, d / 2],
    full: [0, 0],
  };
  const [cx, cy] = corner[crop]!;
  return {
    scale,
    resized: landscape ? [L, scale] : [scale, L],
    square: (landscape ? ["left", "center", "right"] : ["top", "center", "bottom"])[squareIndex] as Crop["square"],
    crop,
    mirror,
    x: landscape ? along + cx : cx,
    y: landscape ? cy : along + cy,
    size: crop === "full" ? scale : 224,
  };
}

const SIZES: [string, number, number][] = [
  ["landscape 500x375", 500, 375],
  ["portrait 375x500", 375, 500],
  ["portrait 500x750 (the float-floor trap)", 500, 750],
  ["square 500x500", 500, 500],
  ["tiny 1x1", 1, 1],
  ["tiny portrait 3x7", 3, 7],
  ["tiny landscape 5x3", 5, 3],
  ["elongated 10000x20", 10000, 20],
  ["elongated 20x10000", 20, 10000],
  ["nearly square 257x256", 257, 256],
];

describe.each(SIZES)("cropPlan for %s", (_name, width, height) => {
  it("has the 144 crops in protocol order with PROTOCOL.md's geometry", () => {
    // Prepare
    const expected = Array.from({ length: 144 }, (_, n) => expectedCrop(width, height, n));

    // Act
    const plan = cropPlan(width, height);

    // Assess
    expect(plan).toHaveLength(144);
    expect(CROPS_PER_IMAGE).toBe(144);
    expect(plan).toEqual(expected);
  });

  it("builds every crop with keys in the printed order", () => {
    // Act
    const plan = cropPlan(width, height);

    // Assess
    for (const crop of plan) {
      expect(Object.keys(crop)).toEqual(["scale", "resized", "square", "crop", "mirror", "x", "y", "size"]);
    }
  });

  it("keeps every window inside its resized image, the short side equal to the scale", () => {
    // Act
    const plan = cropPlan(width, height);

    // Assess
    for (const { scale, resized, x, y, size } of plan) {
      const [rw, rh] = resized;
      expect(Math.min(rw, rh)).toBe(scale);
      expect(x).toBeGreaterThanOrEqual(0);
      expect(y).toBeGreaterThanOrEqual(0);
      expect(x + size).toBeLessThanOrEqual(rw);
      expect(y + size).toBeLessThanOrEqual(rh);
      expect(Number.isInteger(x) && Number.isInteger(y)).toBe(true);
    }
  });
});

describe("cropPlan specifics", () => {
  it("resizes 500x750 at 288 to 288x432, where floating floor gives 431", () => {
    // Prepare: the trap the integer rule avoids really exists in doubles.
    expect(Math.floor(750 * (288 / 500))).toBe(431);

    // Act
    const plan = cropPlan(500, 750);

    // Assess
    const at288 = plan.filter((c) => c.scale === 288);
    expect(at288).toHaveLength(36);
    for (const crop of at288) expect(crop.resized).toEqual([288, 432]);
    expect(at288.filter((c) => c.crop === "tl" && !c.mirror).map((c) => [c.square, c.x, c.y])).toEqual([
      ["top", 0, 0],
      ["center", 0, 72],
      ["bottom", 0, 144],
    ]);
  });

  it("places the 500x375 scheme-1 crop at (58, 16) of 341x256", () => {
    // Act
    const crop = cropPlan(500, 375)[20];

    // Assess: L = floor(256 * 500 / 375) = 341; center square at floor(85 / 2) = 42; +16.
    expect(crop).toEqual({
      scale: 256,
      resized: [341, 256],
      square: "center",
      crop: "center",
      mirror: false,
      x: 58,
      y: 16,
      size: 224,
    });
  });

  it("names squares left/center/right for a square image and puts them all at offset 0", () => {
    // Act
    const plan = cropPlan(300, 300);

    // Assess
    expect(new Set(plan.map((c) => c.square))).toEqual(new Set(["left", "center", "right"]));
    for (const crop of plan.filter((c) => c.crop === "full")) {
      expect([crop.x, crop.y, crop.resized[0], crop.resized[1]]).toEqual([0, 0, crop.scale, crop.scale]);
    }
  });

  it("prints the documented JSON", () => {
    // Act
    const text = formatCropPlanJson(500, 750);

    // Assess
    expect(
      text.startsWith(
        '{"width":500,"height":750,"crops":[{"scale":256,"resized":[256,384],"square":"top","crop":"tl","mirror":false,"x":0,"y":0,"size":224},' +
          '{"scale":256,"resized":[256,384],"square":"top","crop":"tl","mirror":true,"x":0,"y":0,"size":224},',
      ),
    ).toBe(true);
    expect(
      text.endsWith(
        '{"scale":352,"resized":[352,528],"square":"bottom","crop":"full","mirror":true,"x":0,"y":176,"size":352}]}',
      ),
    ).toBe(true);
    expect(JSON.parse(text)).toEqual({ width: 500, height: 750, crops: cropPlan(500, 750) });
  });

  it.each([
    [0, 375],
    [500, 0],
    [-3, 4],
    [2.5, 4],
    [Number.NaN, 4],
    [4, Number.POSITIVE_INFINITY],
  ])("refuses size %s x %s with a message naming the size", (width, height) => {
    // Act
    const act = () => cropPlan(width, height);

    // Assess
    expect(act).toThrow(ConfigurationError);
    expect(act).toThrow(/invalid image size .*must be a positive integer/);
  });
});

describe("schemes", () => {
  it("scheme 1 is scale 256, center square, center crop, unmirrored", () => {
    // Act
    const indices = schemeCropIndices("1");

    // Assess
    const plan = cropPlan(500, 375);
    expect(indices).toEqual([20]);
    const crop = plan[indices[0]!]!;
    expect([crop.scale, crop.square, crop.crop, crop.mirror]).toEqual([256, "center", "center", false]);
  });

  it.each([
    [500, 375, "center"],
    [375, 500, "center"],
  ])("scheme 10 is the five 224 crops of the 256 center square, both mirrors (%sx%s)", (w, h, square) => {
    // Act
    const indices = schemeCropIndices("10");

    // Assess
    const crops = indices.map((i) => cropPlan(w, h)[i]!);
    expect(crops).toHaveLength(10);
    for (const crop of crops) {
      expect([crop.scale, crop.square, crop.size]).toEqual([256, square, 224]);
    }
    expect(crops.map((c) => `${c.crop}/${c.mirror}`).sort()).toEqual(
      ["tl", "tr", "bl", "br", "center"].flatMap((n) => [`${n}/false`, `${n}/true`]).sort(),
    );
  });

  it("scheme 144 is every crop in order", () => {
    expect(schemeCropIndices("144")).toEqual(Array.from({ length: 144 }, (_, i) => i));
  });

  it("returns a fresh array each call, so callers cannot corrupt the table", () => {
    // Prepare
    const first = schemeCropIndices("10");

    // Act
    first.push(999);

    // Assess
    expect(schemeCropIndices("10")).toHaveLength(10);
  });

  it("refuses an unknown scheme and lists the valid ones", () => {
    expect(() => schemeCropIndices("12" as Scheme)).toThrow(/unknown crop scheme "12"; use one of: 1, 10, 144/);
  });

  it.each([
    [1, ["1"]],
    [10, ["1", "10"]],
    [144, ["1", "10", "144"]],
  ] as const)("cropsForCount(%s) covers every scheme the run reports", (count, schemes) => {
    // Act
    const indices = cropsForCount(count);

    // Assess
    expect(indices).toHaveLength(count);
    for (const scheme of schemes) {
      for (const i of schemeCropIndices(scheme)) expect(indices).toContain(i);
    }
    expect([...indices].sort((a, b) => a - b)).toEqual(indices);
  });

  it("refuses a crop count other than 1, 10, 144", () => {
    expect(() => cropsForCount(12 as 10)).toThrow(/unknown crop count 12; use one of: 1, 10, 144/);
  });
});

describe.each([
  ["landscape 500x375", 500, 375, 144],
  ["square 500x500 (three squares coincide)", 500, 500, 48],
  ["257x256 (left and center squares coincide at every scale)", 257, 256, 96],
])("uniqueCropWindows for %s", (_name, width, height, expectedUnique) => {
  it("keeps one crop per distinct window and maps every crop to it", () => {
    // Prepare
    const plan = cropPlan(width, height);
    const windowOf = (c: Crop) => JSON.stringify([c.resized, c.x, c.y, c.size, c.mirror]);

    // Act
    const { unique, indexOf } = uniqueCropWindows(plan);

    // Assess
    expect(unique).toHaveLength(expectedUnique);
    expect(new Set(plan.map(windowOf)).size).toBe(expectedUnique);
    expect(new Set(unique.map(windowOf)).size).toBe(unique.length);
    expect(indexOf).toHaveLength(plan.length);
    plan.forEach((crop, k) => expect(windowOf(unique[indexOf[k]!]!)).toBe(windowOf(crop)));
    // First occurrences, in plan order.
    expect(unique[0]).toBe(plan[0]);
  });
});
