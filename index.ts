/**
 * googlenet-eval as a library: the crop protocol, decoding and sampling, engines, averaging,
 * label files and the local scoring job. Exports by name (STYLE.md); the tfjs engine is reached
 * through `loadEngine`, so importing the library does not load TensorFlow.js.
 */
export {
  BackendUnavailableError,
  ConfigurationError,
  GoogLeNetEvalError,
  ImageDecodeError,
  LabelFileError,
  ModelFormatError,
} from "./model/errors.js";
export { StorageError } from "./storage/errors.js";
export { CROP_NAMES, CROP_SIDE, SCALES, SCHEMES } from "./model/image/crop-types.js";
export type { Crop, CropName, Scale, Scheme, SquareName } from "./model/image/crop-types.js";
export { CROPS_PER_IMAGE, cropPlan, cropsForCount, formatCropPlanJson, resizedSize, schemeCropIndices } from "./model/image/crops.js";
export type { CropCount } from "./model/image/crops.js";
export { DEFAULT_MAX_PIXELS, decodeImage } from "./model/image/decode.js";
export type { DecodedImage, DecodeOptions } from "./model/image/decode.js";
export { CROP_VALUES, sampleCrops, uniqueCropWindows } from "./model/image/sampling.js";
export type { SampleOptions } from "./model/image/sampling.js";
export { FLAVOURS, preprocessFor } from "./model/preprocess.js";
export type { Flavour, Preprocess } from "./model/preprocess.js";
export { ENGINE_NAMES, NUM_CLASSES } from "./model/engine.js";
export type { Engine, EngineName, InputLayout, ModelInfo } from "./model/engine.js";
export { describeOnnxModel } from "./model/onnx/googlenet-recognition.js";
export type { OnnxModelDescription } from "./model/onnx/googlenet-recognition.js";
export { createOrtEngine } from "./model/ort/engine.js";
export type { OrtEngineOptions } from "./model/ort/engine.js";
export { BACKEND_CHOICES, ENGINE_CHOICES, loadEngine, nativeTensorflowLoads } from "./model/load.js";
export type { EngineChoice, LoadEngineOptions } from "./model/load.js";
export {
  CROP_COUNTS,
  ensembleMean,
  meanOfRows,
  rowsAreDistributions,
  schemeMeans,
  schemesForCount,
  softmaxRows,
  topK,
  topKEntries,
} from "./model/predict.js";
export type { Ranked } from "./model/predict.js";
export { parseSynsets, readSynsets } from "./model/synsets.js";
export type { Synsets } from "./model/synsets.js";
export { isFailed } from "./scoring/records.js";
export type {
  ErrorRates,
  FailedRecord,
  ResultRecord,
  SchemeErrorRates,
  SchemeTop5,
  ScoredRecord,
  Summary,
  TopEntry,
} from "./scoring/records.js";
export { LocalLocation } from "./storage/location.js";
export { openLocation, readUrl } from "./storage/open-location.js";
export type { Location } from "./storage/location.js";
export { describeProblems, labelFromPath, parseLabels, readLabels } from "./scoring/labels.js";
export type { LabelFormat, LabelProblem, LabelTable, ParseLabelsOptions } from "./scoring/labels.js";
export { DEFAULT_BATCH_CROPS, DEFAULT_LOOK_AHEAD, scoreImages } from "./scoring/scorer.js";
export type { ImageInput, ScorerOptions } from "./scoring/scorer.js";
export { formatTable3, summarize } from "./scoring/summary.js";
export { parseResultsText, RESULTS_FILE, ResultsWriter, SUMMARY_FILE } from "./scoring/results.js";
export type { ResumeState } from "./scoring/results.js";
export { createProgress, progressLine } from "./scoring/progress.js";
export type { Progress, ProgressOptions } from "./scoring/progress.js";
export { runScoreJob } from "./scoring/score-job.js";
export { IMAGE_EXTENSIONS, isImageKey } from "./storage/image-keys.js";
export type { ScoreJobOptions, ScoreJobResult } from "./scoring/score-job.js";
