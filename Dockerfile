# fraudstream: one image for the worker, ui, trainer, simulator and init services.
# Installs exactly the versions in constraints.txt (the lock), runs as a non-root user.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GX_ANALYTICS_ENABLED=False \
    OMP_NUM_THREADS=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 fraudstream \
    && mkdir -p /data /models /reports \
    && chown fraudstream /data /models /reports

WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY app ./app
COPY features ./features
COPY training ./training
COPY expectations ./expectations
COPY scripts/build-native ./scripts/build-native
# the card fold compiled with mypyc (features/fold.py), the compiler and mypy gone again afterwards
RUN pip install --constraint constraints.txt . \
    && apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --constraint constraints.txt mypy \
    && FRAUDSTREAM_PYTHON_BIN=python scripts/build-native \
    && cp features/_card_native*.so "$(python -c 'import features, os; print(os.path.dirname(features.__file__))')/" \
    && pip uninstall -y mypy \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && cd / && python -c "import app.cli, xgboost, faust, feast; from features.fold import KIND; assert KIND == 'mypyc', KIND"

USER fraudstream
ENV FRAUDSTREAM_DATA_DIR=/data \
    FRAUDSTREAM_MODELS_DIR=/models \
    FRAUDSTREAM_REPORTS_DIR=/reports
ENTRYPOINT ["fraudstream"]
CMD ["--help"]
