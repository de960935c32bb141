# syntax=docker/dockerfile:1
#
# The googlenet-eval worker: `node dist/handlers/cli.js worker`, configured by the environment
# the ECS task definition sets (infra/worker-task.ts). Three targets, one per fleet:
#
#   gpu-tfjs         tfjs-node-gpu 4.22 (libtensorflow 2.9.1) on CUDA 11.8 + cuDNN 8.9 libraries
#   gpu-onnxruntime  onnxruntime-node's CUDA execution provider on CUDA 12.9 + cuDNN 9.10
#   cpu              onnxruntime on the CPU: Node 22 only, no CUDA, no tfjs-node-gpu
#
# The stack picks one with context workers=gpu|cpu and gpuEngine=tfjs|onnxruntime. The last
# stage (gpu-tfjs) is what a plain `docker build .` produces.
#
# Everything fetched is pinned and checked: the Ubuntu 24.04 LTS base by digest, Node by its
# sha256, and the CUDA and cuDNN user-space libraries as NVIDIA's versioned redistributable
# archives (developer.download.nvidia.com/compute/*/redist/, which keeps every release) by the
# sha256 in NVIDIA's redistrib_<version>.json manifests, not from nvidia/cuda tags, which NVIDIA
# deletes at end of life. fetch-verified refuses an empty checksum, so a build argument left
# unset fails the build loudly instead of trusting the download. README.md ("Image checksums")
# says where each value comes from and which ones only the first real build has checked.
#
# .npmrc must be in the build context (it is not in .dockerignore): it carries
# onnxruntime-node-install=skip, so no install step downloads the CUDA add-on unchecked.

ARG BASE_IMAGE=ubuntu:24.04@sha256:186072bba1b2f436cbb91ef2567abca677337cfc786c86e107d25b7072feef0c
ARG NODE_VERSION=22.12.0
ARG NODE_SHA256=22982235e1b71fa8850f82edd09cdae7e3f32df1764a9ec298c72d25ef2c164f

# ---- base: Ubuntu 24.04 LTS with Node 22 from the official tarball -----------------------
FROM ${BASE_IMAGE} AS base
ARG NODE_VERSION
ARG NODE_SHA256
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl xz-utils \
 && rm -rf /var/lib/apt/lists/*
COPY <<'EOF' /usr/local/bin/fetch-verified
#!/bin/sh
# fetch-verified URL SHA256 OUT: download URL to OUT and stop the build unless it has SHA256.
set -eu
url="$1"; sum="$2"; out="$3"
if [ -z "$sum" ]; then
  echo "fetch-verified: no sha256 for $url; pass it as a build argument (README.md, Image checksums)" >&2
  exit 1
fi
curl -fsSL --retry 3 -o "$out" "$url"
if ! echo "$sum  $out" | sha256sum -c - >/dev/null; then
  echo "fetch-verified: $url does not have sha256 $sum (got $(sha256sum "$out" | cut -d' ' -f1))" >&2
  exit 1
fi
EOF
RUN chmod 755 /usr/local/bin/fetch-verified \
 && fetch-verified "https://nodejs.org/dist/v${NODE_VERSION}/node-v${NODE_VERSION}-linux-x64.tar.xz" "${NODE_SHA256}" /tmp/node.tar.xz \
 && mkdir -p /opt/node \
 && tar -xJf /tmp/node.tar.xz -C /opt/node --strip-components=1 --no-same-owner \
 && rm /tmp/node.tar.xz
ENV PATH=/opt/node/bin:$PATH

# ---- build: full dependencies, compile TypeScript into dist/ ------------------------------
FROM base AS build
WORKDIR /src
COPY package.json package-lock.json .npmrc ./
# --ignore-scripts: compiling needs no native add-on, so nothing is downloaded here.
RUN npm ci --ignore-scripts
# The context is already trimmed to sources by .dockerignore.
COPY . .
RUN npm run build

# ---- deps-cpu: production dependencies without either tfjs-node flavour -------------------
FROM base AS deps-cpu
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# Both tfjs-node flavours are optionalDependencies; sharp's and onnxruntime-node's binaries
# ship inside their npm packages, so --ignore-scripts loses nothing and downloads nothing.
RUN npm ci --omit=dev --ignore-scripts \
 && rm -rf node_modules/@tensorflow/tfjs-node node_modules/@tensorflow/tfjs-node-gpu \
 && npm cache clean --force

# ---- deps-gpu-tfjs: plus tfjs-node-gpu, built against a checked libtensorflow ------------
FROM base AS deps-gpu-tfjs
ARG LIBTENSORFLOW_SHA256=20c46f761d5905f592c4eac0812e8e50d9cb439f9440a9391912cf4c02ed8be8
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# tfjs-node-gpu's install script downloads libtensorflow only when deps/lib lacks it, and a
# prebuilt binding unless told to build from source: the library is put there first, checked,
# and the binding is compiled here against it (headers from /opt/node, no download).
RUN npm ci --omit=dev --ignore-scripts \
 && rm -rf node_modules/@tensorflow/tfjs-node \
 && fetch-verified https://storage.googleapis.com/tensorflow/libtensorflow/libtensorflow-gpu-linux-x86_64-2.9.1.tar.gz \
      "${LIBTENSORFLOW_SHA256}" /tmp/libtensorflow.tar.gz \
 && mkdir -p node_modules/@tensorflow/tfjs-node-gpu/deps \
 && tar -xzf /tmp/libtensorflow.tar.gz -C node_modules/@tensorflow/tfjs-node-gpu/deps \
 && rm /tmp/libtensorflow.tar.gz \
 && npm_config_build_from_source=true npm_config_nodedir=/opt/node npm rebuild @tensorflow/tfjs-node-gpu \
 && test -f node_modules/@tensorflow/tfjs-node-gpu/deps/lib/libtensorflow.so.2.9.1 \
 && npm cache clean --force

# ---- cuda11: the CUDA 11.8 and cuDNN 8.9 shared libraries libtensorflow 2.9 loads ---------
# TensorFlow enables the GPU only when all of cudart, cublas(Lt), cufft, curand, cusolver,
# cusparse and cudnn load; CUDA 11 minor-version compatibility lets 11.8 serve a 11.2 build.
# Only the shared libraries (and their soname links) are kept: no headers, static libraries,
# docs or the driver stub.
FROM base AS cuda11
ARG CUDA_REDIST=https://developer.download.nvidia.com/compute/cuda/redist
ARG CUDNN_REDIST=https://developer.download.nvidia.com/compute/cudnn/redist
ARG CUDART11_SHA256=56129e0c42df03ecb50a7bb23fc3285fa39af1a818f8826b183cf793529098bb
ARG CUBLAS11_SHA256=045e6455c9f8789b1c7ced19957c7904d23c221f4d1d75bb574a2c856aebae98
ARG CUFFT11_SHA256=eadca0b30a4a2c1f741fde88d6dd611604e488fdb51c676861eabc08d2c4612f
ARG CURAND11_SHA256=9d30be251c1a0463b52203f6514dac5062844c606d13e234d1386e80c83db279
ARG CUSOLVER11_SHA256=ed136d960d28001fef1fe896aab56ea3e6a886970ab732274c9306e1bec88c96
ARG CUSPARSE11_SHA256=9250fe539d4bd6a378581dc0b528e8cfc418b57f28545bf39d70cae762075df7
ARG CUDNN8_SHA256=a3e2509028cecda0117ce5a0f42106346e82e86d390f4bb9475afc976c77402e
RUN set -eu; mkdir -p /opt/cuda/lib; cd /tmp; \
    for entry in \
      "$CUDA_REDIST/cuda_cudart/linux-x86_64/cuda_cudart-linux-x86_64-11.8.89-archive.tar.xz $CUDART11_SHA256" \
      "$CUDA_REDIST/libcublas/linux-x86_64/libcublas-linux-x86_64-11.11.3.6-archive.tar.xz $CUBLAS11_SHA256" \
      "$CUDA_REDIST/libcufft/linux-x86_64/libcufft-linux-x86_64-10.9.0.58-archive.tar.xz $CUFFT11_SHA256" \
      "$CUDA_REDIST/libcurand/linux-x86_64/libcurand-linux-x86_64-10.3.0.86-archive.tar.xz $CURAND11_SHA256" \
      "$CUDA_REDIST/libcusolver/linux-x86_64/libcusolver-linux-x86_64-11.4.1.48-archive.tar.xz $CUSOLVER11_SHA256" \
      "$CUDA_REDIST/libcusparse/linux-x86_64/libcusparse-linux-x86_64-11.7.5.86-archive.tar.xz $CUSPARSE11_SHA256" \
      "$CUDNN_REDIST/cudnn/linux-x86_64/cudnn-linux-x86_64-8.9.7.29_cuda11-archive.tar.xz $CUDNN8_SHA256"; do \
      set -- $entry; \
      fetch-verified "$1" "$2" archive.tar.xz; \
      tar -xJf archive.tar.xz --strip-components=2 -C /opt/cuda/lib --exclude='*/stubs/*' --wildcards '*/lib/*.so*'; \
      rm archive.tar.xz; \
    done; \
    test -e /opt/cuda/lib/libcudart.so.11.0 && test -e /opt/cuda/lib/libcudnn.so.8

# ---- cuda12: CUDA 12.9 and cuDNN 9.10 libraries, and onnxruntime's CUDA provider ----------
FROM base AS cuda12
ARG CUDA_REDIST=https://developer.download.nvidia.com/compute/cuda/redist
ARG CUDNN_REDIST=https://developer.download.nvidia.com/compute/cudnn/redist
ARG CUDART12_SHA256=1f6ad42d4f530b24bfa35894ccf6b7209d2354f59101fd62ec4a6192a184ce99
ARG CUBLAS12_SHA256=546addc4a9d82b8f23aa9ba9274b6bc0429a63008a31c759884ac24880796057
ARG CUFFT12_SHA256=b0e65af59b0c2f6c8ed9f5552a9b375890855b7926ae2c0404d15dcf2565bda4
ARG CURAND12_SHA256=48281b4caadb1cf790d44ac76b23c77d06f474c0b1799814f314aafec9258ad6
ARG CUDNN9_SHA256=d0defcbc4c6dad711ff4cb66d254036a300c9071b07c7b64199aacab534313c1
# Must equal onnxruntime-node's version in package-lock.json: the provider is built for that
# libonnxruntime (a unit test keeps them equal).
ARG ORT_VERSION=1.30.0
ARG ORT_GPU_SHA256=f9886932ee7bb0b4d3fcab736a392d4ff5efaa0672b47f19f0cec03437cf64f1
RUN set -eu; mkdir -p /opt/cuda/lib /opt/ort; cd /tmp; \
    for entry in \
      "$CUDA_REDIST/cuda_cudart/linux-x86_64/cuda_cudart-linux-x86_64-12.9.79-archive.tar.xz $CUDART12_SHA256" \
      "$CUDA_REDIST/libcublas/linux-x86_64/libcublas-linux-x86_64-12.9.1.4-archive.tar.xz $CUBLAS12_SHA256" \
      "$CUDA_REDIST/libcufft/linux-x86_64/libcufft-linux-x86_64-11.4.1.4-archive.tar.xz $CUFFT12_SHA256" \
      "$CUDA_REDIST/libcurand/linux-x86_64/libcurand-linux-x86_64-10.3.10.19-archive.tar.xz $CURAND12_SHA256" \
      "$CUDNN_REDIST/cudnn/linux-x86_64/cudnn-linux-x86_64-9.10.2.21_cuda12-archive.tar.xz $CUDNN9_SHA256"; do \
      set -- $entry; \
      fetch-verified "$1" "$2" archive.tar.xz; \
      tar -xJf archive.tar.xz --strip-components=2 -C /opt/cuda/lib --exclude='*/stubs/*' --wildcards '*/lib/*.so*'; \
      rm archive.tar.xz; \
    done; \
    fetch-verified "https://github.com/microsoft/onnxruntime/releases/download/v${ORT_VERSION}/onnxruntime-linux-x64-gpu_cuda12-${ORT_VERSION}.tgz" \
      "$ORT_GPU_SHA256" ort.tgz; \
    tar -xzf ort.tgz --strip-components=2 -C /opt/ort \
      "onnxruntime-linux-x64-gpu_cuda12-${ORT_VERSION}/lib/libonnxruntime_providers_cuda.so" \
      "onnxruntime-linux-x64-gpu_cuda12-${ORT_VERSION}/lib/libonnxruntime_providers_shared.so"; \
    rm ort.tgz; \
    test -e /opt/cuda/lib/libcudart.so.12 && test -e /opt/cuda/lib/libcudnn.so.9

# ---- runtime: what every target shares -----------------------------------------------------
FROM base AS runtime
# HOME and the CUDA kernel cache on writable paths for the non-root user: the JIT cache of
# PTX kernels then survives between models within a task instead of failing to be written.
# HEALTH_FILE: where the worker loop records progress and the health check reads it (the
# task definition sets the same path).
# MALLOC_ARENA_MAX=2: glibc's per-thread malloc arenas (sharp's and onnxruntime's threads) made
# RSS creep over long runs while V8's heap stayed flat; two arenas hold it flat (npm run bench -- --soak).
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=2 \
    HOME=/home/worker \
    CUDA_CACHE_PATH=/tmp/cuda-cache \
    CUDA_CACHE_MAXSIZE=2147483648 \
    HEALTH_FILE=/tmp/googlenet-eval/health.json
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid worker --home-dir /home/worker --create-home --shell /usr/sbin/nologin worker
WORKDIR /app
COPY --from=build --chown=root:root /src/dist ./dist
# The built-in ImageNet class list (model/synsets.ts finds it beside dist/).
COPY --from=build --chown=root:root /src/data ./data
COPY --chown=root:root package.json ./
ENTRYPOINT ["node", "dist/handlers/cli.js", "worker"]
# The same command, interval and start period as the task definition's health check
# (infra/worker-task.ts), for `docker run`; ECS uses the task definition's.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
  CMD ["node", "dist/handlers/health-check.js", "--max-age", "960"]

# ---- cpu: onnxruntime on the CPU (Fargate Spot workers) ------------------------------------
FROM runtime AS cpu
COPY --from=deps-cpu --chown=root:root /app/node_modules ./node_modules
USER 10001:10001

# ---- gpu-onnxruntime: onnxruntime's CUDA execution provider --------------------------------
FROM runtime AS gpu-onnxruntime
# The NVIDIA container runtime mounts the driver's CUDA library only for the "compute" capability.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/opt/cuda/lib
COPY --from=cuda12 /opt/cuda/lib /opt/cuda/lib
COPY --from=deps-cpu --chown=root:root /app/node_modules ./node_modules
# onnxruntime-node loads its providers from beside its own binding.
COPY --from=cuda12 /opt/ort/ ./node_modules/onnxruntime-node/bin/napi-v6/linux/x64/
USER 10001:10001

# ---- gpu-tfjs: tfjs-node-gpu on CUDA 11 (the default GPU engine) ---------------------------
FROM runtime AS gpu-tfjs
# TF_FORCE_GPU_ALLOW_GROWTH: TensorFlow takes GPU memory as it needs it, not all at start-up.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/opt/cuda/lib \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    TF_CPP_MIN_LOG_LEVEL=1
COPY --from=cuda11 /opt/cuda/lib /opt/cuda/lib
COPY --from=deps-gpu-tfjs --chown=root:root /app/node_modules ./node_modules
USER 10001:10001
