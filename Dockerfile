# Scoring image for `landsight serve`: onnxruntime only, no torch / timm / scikit-learn at serve time.
#
#   docker build -t landsight-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/eurosat.landsight:/models/model.landsight:ro" landsight-serve
#
# The bundle (model.onnx + bundle.json) is mounted at /models/model.landsight, or baked in with
# `COPY eurosat.landsight /models/model.landsight`. Settings: LANDSIGHT_SERVE_* variables
# (e.g. -e LANDSIGHT_SERVE_MAX_BATCH_SIZE=16) or the options of `landsight serve --help`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Serve-time dependencies only (rasterio wheels bundle GDAL; onnxruntime is the CPU build).
RUN pip install \
        "numpy>=1.26" "pillow>=10.0" "onnxruntime>=1.18" "pandas>=2.2,<3" "pyarrow>=15" "rasterio>=1.3" \
        "typer>=0.12" "rich>=13" "fastapi>=0.110" "uvicorn[standard]>=0.29" "python-multipart>=0.0.9"

# landsight itself without its training dependencies (torch, timm, scikit-learn, skl2onnx, ...).
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-deps . \
    && python -c "import landsight.serve.app, sys; assert 'torch' not in sys.modules" \
    && useradd --create-home --uid 10001 landsight

USER landsight
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2)"

ENTRYPOINT ["landsight", "serve", "/models/model.landsight", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--workers", "1"]
