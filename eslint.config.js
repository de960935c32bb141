import eslint from "@eslint/js";
import tseslint from "typescript-eslint";

/**
 * The house's import directions (../shared/STYLE.md): handlers -> queue -> scoring -> storage,
 * everything -> model; inside model/, image/ and onnx/ import neither engine. Checked on the
 * import specifiers themselves (with `.js` endings the import plugins cannot resolve), so a
 * back edge fails `npm run lint` instead of waiting for a reviewer.
 */
function importsNot(layers, why) {
  return { regex: `(^|/)(${layers.join("|")})/`, message: why };
}

const CLOUD_AND_CLI = ["@aws-sdk/.*", "cli-progress", "aws-cdk-lib.*", "constructs"];

const MODEL_ALONE = {
  regex: `(^|/)(storage|scoring|queue|handlers|infra)/|^(${CLOUD_AND_CLI.join("|")})$`,
  message: "model/ knows nothing of storage, runs, queues, S3, SQS or the CLI (STYLE.md).",
};
const NEITHER_ENGINE = [
  importsNot(["tfjs", "ort"], "model/image/ and model/onnx/ serve both engines and import neither (STYLE.md)."),
  { regex: "^(@tensorflow/.*|onnxruntime-node)$", message: "model/image/ and model/onnx/ import neither engine's runtime (STYLE.md)." },
];
const GRAPH_EDITS_FENCED = importsNot(["graph-edits"], "onnxruntime's graph edits are the ort engine's own: only model/ort/ reaches them.");

export default tseslint.config(
  { ignores: ["dist/**", "cdk.out/**", "node_modules/**", "results/**", ".scratch/**"] },
  eslint.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-restricted-syntax": [
        "error",
        { selector: "ExportAllDeclaration", message: "Export by name (STYLE.md): no `export *`." }
      ]
    }
  },
  ...[
    { files: ["model/ort/*.ts"], patterns: [MODEL_ALONE, { regex: "graph-edits/(?!index\\.js$)", message: "The engine reaches the graph edits through their one door, graph-edits/index.ts." }] },
    { files: ["model/ort/graph-edits/**/*.ts"], patterns: [MODEL_ALONE] },
    { files: ["model/*.ts", "model/tfjs/**/*.ts"], patterns: [MODEL_ALONE, GRAPH_EDITS_FENCED] },
    { files: ["model/image/**/*.ts", "model/onnx/**/*.ts"], patterns: [MODEL_ALONE, GRAPH_EDITS_FENCED, ...NEITHER_ENGINE] },
    { files: ["storage/**/*.ts"], patterns: [importsNot(["scoring", "queue", "handlers", "infra"], "storage/ sits below scoring/, queue/ and handlers/ (STYLE.md)."), GRAPH_EDITS_FENCED] },
    { files: ["scoring/**/*.ts"], patterns: [importsNot(["queue", "handlers", "infra"], "scoring/ sits below queue/ and handlers/ (STYLE.md)."), GRAPH_EDITS_FENCED] },
    { files: ["queue/**/*.ts"], patterns: [importsNot(["handlers", "infra"], "queue/ sits below handlers/; infra/ deploys it (STYLE.md)."), GRAPH_EDITS_FENCED] },
    { files: ["handlers/**/*.ts", "index.ts"], patterns: [GRAPH_EDITS_FENCED] },
  ].map(({ files, patterns }) => ({ files, rules: { "no-restricted-imports": ["error", { patterns }] } })),
  {
    // infra/ deploys the code: it takes queue timing (and, until their own layer has them, the
    // project's error class and the image suffixes the drop folder's notifications filter on),
    // never the code that runs.
    files: ["infra/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", { patterns: [{
        regex: "^\\.\\./(?!queue/queue-timing\\.js$|model/errors\\.js$|storage/image-keys\\.js$)",
        message: "infra/ imports only constants (queue/queue-timing.ts); handlers reach it as asset paths (STYLE.md)."
      }] }]
    }
  }
);
