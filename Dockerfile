# syntax=docker/dockerfile:1
#
# The googlenet-eval GPU worker: `node dist/handlers/cli.js worker`, configured by the
# environment the ECS task definition sets (QUEUE_URL, DEFAULT_MODEL, DEFAULT_CROPS,
# DROP_OUTPUT, AWS_REGION, GOOGLENET_EVAL_SYNSETS, VISIBILITY_TIMEOUT_SECONDS).
#
# Base: CUDA 11.2.2 + cuDNN 8, what @tensorflow/tfjs-node-gpu 4.x (libtensorflow 2.9) links
# against. The GPU therefore runs the tfjs engine. onnxruntime runs on the CPU in this image:
# its CUDA execution provider needs CUDA 12 + cuDNN 9, which cannot share an image with
# tfjs-node-gpu's CUDA 11.2, so the project's .npmrc line `onnxruntime-node-install=skip` keeps
# its installer from fetching the CUDA add-on; .npmrc must be in the build context (it is not
# in .dockerignore) and is copied before every npm command below.

ARG CUDA_BASE=nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04
ARG NODE_VERSION=22.12.0

# ---- node: the official Node 22 tarball, checksum-verified ------------------------------
FROM ${CUDA_BASE} AS node
ARG NODE_VERSION
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl xz-utils \
 && rm -rf /var/lib/apt/lists/*
RUN set -eux; \
    cd /tmp; \
    curl -fsSLO "https://nodejs.org/dist/v${NODE_VERSION}/node-v${NODE_VERSION}-linux-x64.tar.xz"; \
    curl -fsSLO "https://nodejs.org/dist/v${NODE_VERSION}/SHASUMS256.txt"; \
    grep " node-v${NODE_VERSION}-linux-x64.tar.xz\$" SHASUMS256.txt | sha256sum -c -; \
    mkdir -p /opt/node; \
    tar -xJf "node-v${NODE_VERSION}-linux-x64.tar.xz" -C /opt/node --strip-components=1 --no-same-owner; \
    rm -f "node-v${NODE_VERSION}-linux-x64.tar.xz" SHASUMS256.txt
ENV PATH=/opt/node/bin:$PATH

# ---- build: full dependencies, compile TypeScript into dist/ ----------------------------
FROM node AS build
WORKDIR /src
COPY package.json package-lock.json .npmrc ./
# --ignore-scripts: compiling needs no native add-on, so neither tfjs-node flavour downloads
# libtensorflow in this stage.
RUN npm ci --ignore-scripts
# The context is already trimmed to sources by .dockerignore.
COPY . .
RUN npm run build

# ---- deps: production dependencies only, plus tfjs-node-gpu with its GPU libtensorflow ---
FROM node AS deps
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# Both tfjs-node flavours are optionalDependencies. Install without scripts, drop the CPU
# flavour (two libtensorflow builds in one process conflict, and the CPU one is ~300 MB of
# nothing here), then install the GPU flavour, whose install script downloads libtensorflow
# GPU (fine in a real image build) and its N-API binding (built with the tools above if no
# prebuilt one matches).
RUN npm ci --omit=dev --ignore-scripts \
 && rm -rf node_modules/@tensorflow/tfjs-node \
 && npm install --omit=dev --no-save --ignore-scripts @tensorflow/tfjs-node-gpu@4.22.0 \
 && rm -rf node_modules/@tensorflow/tfjs-node \
 && npm rebuild @tensorflow/tfjs-node-gpu \
 && npm cache clean --force

# ---- runtime --------------------------------------------------------------------------
FROM ${CUDA_BASE} AS runtime
COPY --from=node /opt/node /opt/node
# TF_FORCE_GPU_ALLOW_GROWTH: TensorFlow takes GPU memory as it needs it, not all at start-up.
ENV PATH=/opt/node/bin:$PATH \
    NODE_ENV=production \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    TF_CPP_MIN_LOG_LEVEL=1
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --home-dir /app --shell /usr/sbin/nologin worker
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /src/dist ./dist
COPY --chown=root:root package.json ./
USER 10001:10001
ENTRYPOINT ["node", "dist/handlers/cli.js", "worker"]
