import { App } from "aws-cdk-lib";
import { describe, expect, it } from "vitest";
import { DEFAULT_SETTINGS, settingsFromContext } from "../../../infra/deploy-settings.js";
import { ConfigurationError } from "../../../model/errors.js";

const settingsOf = (context: Record<string, unknown>) => settingsFromContext(new App({ context }).node);

describe("settingsFromContext", () => {
  it("gives the documented defaults for an empty context and for cdk.json's empty strings", () => {
    // Act
    const bare = settingsOf({});
    const fromCdkJson = settingsOf({ inputBucketName: "", vpcId: "", alarmTopicArn: "", inputPrefix: "" });

    // Assess
    expect(bare).toEqual(DEFAULT_SETTINGS);
    expect(fromCdkJson).toEqual(DEFAULT_SETTINGS);
    expect(DEFAULT_SETTINGS).toMatchObject({ instanceTypes: ["g4dn.xlarge", "g5.xlarge"], spot: false, maxInstances: 4, defaultCrops: 144 });
  });

  describe.each([
    { name: "JSON values from cdk.json", context: { instanceTypes: ["g5.xlarge"], spot: true, maxInstances: 8, defaultCrops: 10 } },
    { name: "strings from -c on the command line", context: { instanceTypes: "g5.xlarge", spot: "true", maxInstances: "8", defaultCrops: "10" } },
  ])("$name", ({ context }) => {
    it("parse to the same settings", () => {
      // Act
      const settings = settingsOf(context);

      // Assess
      expect(settings).toMatchObject({ instanceTypes: ["g5.xlarge"], spot: true, maxInstances: 8, defaultCrops: 10 });
    });
  });

  it("sizes CPU workers within Fargate's memory range for their CPU", () => {
    // Act
    const small = settingsOf({ workers: "cpu", cpuWorkerCpu: "2048" });
    const act = () => settingsOf({ cpuWorkerCpu: "1024", cpuWorkerMemoryMiB: "16384" });

    // Assess
    expect(small).toMatchObject({ workers: "cpu", cpuWorkerCpu: 2048, cpuWorkerMemoryMiB: 8192 });
    expect(settingsOf({ cpuWorkerCpu: "8192" }).cpuWorkerMemoryMiB).toBe(16384);
    expect(act).toThrow(/context "cpuWorkerMemoryMiB".*from 2048 to 8192 for cpuWorkerCpu 1024/);
  });

  it("takes the drop folder's pixel limit from cdk.json or -c, and leaves it out when not given", () => {
    // Act
    const fromJson = settingsOf({ dropMaxPixels: 24000000 });
    const fromFlag = settingsOf({ dropMaxPixels: "24000000" });

    // Assess
    expect(fromJson.dropMaxPixels).toBe(24_000_000);
    expect(fromFlag.dropMaxPixels).toBe(24_000_000);
    expect(settingsOf({ dropMaxPixels: "" })).not.toHaveProperty("dropMaxPixels");
  });

  it("normalises the input prefix and keeps optional names", () => {
    // Act
    const settings = settingsOf({ inputBucketName: "imagenet-val", inputPrefix: "ILSVRC2012/val", vpcId: "vpc-0123456789abcdef0", instanceTypes: "g4dn.xlarge, g5.xlarge" });

    // Assess
    expect(settings).toMatchObject({
      inputBucketName: "imagenet-val",
      inputPrefix: "ILSVRC2012/val/",
      vpcId: "vpc-0123456789abcdef0",
      instanceTypes: ["g4dn.xlarge", "g5.xlarge"],
    });
  });

  describe.each([
    { key: "spot", value: "yes", says: "one of: true, false" },
    { key: "maxInstances", value: "0", says: "from 1 to 100" },
    { key: "defaultCrops", value: "12", says: "one of: 1, 10, 144" },
    { key: "instanceTypes", value: "[]", says: "non-empty list" },
    { key: "defaultModelKey", value: "/models/x.onnx", says: "S3 object key" },
    { key: "logRetentionDays", value: "31", says: "one of: 1, 3, 5" },
    { key: "vpcId", value: "my-vpc", says: "vpc-0123456789abcdef0" },
    { key: "inputBucketName", value: "Not_A_Bucket", says: "S3 bucket name" },
    { key: "workers", value: "fargate", says: "one of: gpu, cpu" },
    { key: "gpuEngine", value: "tensorrt", says: "one of: tfjs, onnxruntime" },
    { key: "cpuWorkerCpu", value: "512", says: "from 1024 to 16384" },
    { key: "cpuWorkerCpu", value: "3072", says: "one of: 1024, 2048, 4096, 8192, 16384" },
    { key: "queueAgeAlarmHours", value: "0", says: "from 1 to 336" },
    { key: "dropMaxPixels", value: "0", says: "a whole number, 1 or more" },
    { key: "dropMaxPixels", value: "60MP", says: "a whole number, 1 or more" },
  ])("a bad $key", ({ key, value, says }) => {
    it("fails with a ConfigurationError naming the key and the valid choices", () => {
      // Act
      const act = () => settingsOf({ [key]: value });

      // Assess
      expect(act).toThrow(ConfigurationError);
      expect(act).toThrow(new RegExp(`context "${key}".*${says.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
    });
  });
});
