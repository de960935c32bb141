import { describe, expect, it } from "vitest";
import { createS3Client, createSqsClient } from "../../storage/aws-clients.js";

describe("createS3Client", () => {
  describe.each([
    ["AWS_ENDPOINT_URL", { AWS_ENDPOINT_URL: "http://127.0.0.1:4566" }],
    ["AWS_ENDPOINT_URL_S3", { AWS_ENDPOINT_URL_S3: "http://127.0.0.1:4566" }],
    ["both (the S3 one wins)", { AWS_ENDPOINT_URL: "http://10.0.0.1:1", AWS_ENDPOINT_URL_S3: "http://127.0.0.1:4566" }],
  ])("with %s set", (_name, env) => {
    it("uses that endpoint with path-style addressing", async () => {
      // Act
      const client = createS3Client({ ...env, AWS_REGION: "eu-west-1" });
      // Assess
      expect(client.config.forcePathStyle).toBe(true);
      const endpoint = await client.config.endpoint?.();
      expect(endpoint).toMatchObject({ hostname: "127.0.0.1", port: 4566, protocol: "http:" });
      expect(await client.config.region()).toBe("eu-west-1");
      client.destroy();
    });
  });

  it("keeps virtual-hosted addressing and the SDK's endpoint on real AWS", () => {
    // Act
    const client = createS3Client({ AWS_REGION: "eu-west-1", AWS_ENDPOINT_URL: "  " });
    // Assess
    expect(client.config.forcePathStyle).toBe(false);
    expect(client.config.endpoint).toBeUndefined();
    client.destroy();
  });
});

describe("createSqsClient", () => {
  it("passes a custom endpoint explicitly, so requests do not go to the QueueUrl's host", async () => {
    // Act
    const client = createSqsClient({ AWS_ENDPOINT_URL: "http://127.0.0.1:4566", AWS_REGION: "us-east-1" });
    // Assess
    expect(await client.config.endpoint?.()).toMatchObject({ hostname: "127.0.0.1", port: 4566 });
    client.destroy();
  });
});
