# gomodel-proxy: docker build -t gomodel-proxy . && docker run -p 8080:8080 -e OPENAI_API_KEY gomodel-proxy
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gomodel_proxy ./gomodel_proxy
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GOMODEL_HOST=0.0.0.0
COPY --from=build /install /usr/local
RUN useradd --system --uid 10001 --home-dir /app --create-home gomodel
WORKDIR /app
COPY --chown=gomodel conf ./conf
USER gomodel
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["gomodel-proxy"]
CMD ["--config", "conf/config.yaml"]
