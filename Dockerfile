# The code location image: its default command serves trending_assets.definitions over gRPC
# (the Helm chart's user deployment); run and step pods start from the same image.
#
#   docker build -t trending-assets .                                # CPU
#   docker build --build-arg VARIANT=cuda -t trending-assets:cuda .  # CUDA torch and xgboost
#
# Layers: the base, then the Python dependencies (rebuilt only when pyproject.toml changes),
# then the code (rebuilt on every commit, seconds).
FROM python:3.11.7-slim-bookworm

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/app \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    HF_HUB_OFFLINE=1 \
    GX_ANALYTICS_ENABLED=false \
    WANDB_SILENT=true

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A fixed numeric user, so `runAsNonRoot` can verify it.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
    && mkdir -p /opt/app /opt/dagster/dagster_home \
    && chown -R 10001:10001 /opt/app /opt/dagster

WORKDIR /opt/app

# Dependencies only: the list is read from pyproject.toml, so code changes keep this layer.
# CPU: torch's CPU wheel and xgboost-cpu. CUDA: PyPI's torch wheel (CUDA runtime included,
# the node supplies the driver) and the CUDA-enabled xgboost.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && if [ "${VARIANT}" = "cuda" ]; then \
         sed -i 's/^xgboost-cpu==/xgboost==/' /tmp/requirements.txt \
         && pip install "torch==${TORCH_VERSION}"; \
       elif [ "${VARIANT}" = "cpu" ]; then \
         pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"; \
       else \
         echo "VARIANT must be cpu or cuda, not ${VARIANT}" >&2 && exit 1; \
       fi \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code. Run from the source tree (PYTHONPATH) so configs/ sits beside the package.
COPY --chown=10001:10001 configs ./configs
COPY --chown=10001:10001 resources ./resources
COPY --chown=10001:10001 trending_assets ./trending_assets
COPY --chown=10001:10001 workspace.yaml ./

# Lineage records the commit; the image has no .git.
ARG GIT_SHA=unknown
ENV TRENDING_CODE_VERSION=${GIT_SHA}

USER 10001:10001
EXPOSE 3030

# No ENTRYPOINT: the chart and dagster-k8s pass whole commands (`dagster api execute_run`,
# `dagster api execute_step`) as the container's arguments.
CMD ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "3030", "--module-name", "trending_assets.definitions"]
