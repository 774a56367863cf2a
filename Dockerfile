# minibroker's image: the `minibroker` command on a slim Python, run as a non-root user,
# data under the volume /var/lib/minibroker.
#
# Online (the default base, packages from PyPI):
#   docker build -t minibroker:latest .
# Offline (what `make image` does; see docs/docker.md): a base image built from Debian's
# packages and the project plus its dependencies as wheels built on the host:
#   docker build --build-arg BASE_IMAGE=minibroker-base:bookworm \
#                --build-arg WHEELS=build/wheels -t minibroker:latest .
#
# Everything that does not depend on the sources comes first, so a rebuild after a code
# change redoes only the install and the final copy.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS install
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/minibroker
# WHEELS: a folder of wheels in the build context; pip then installs from it alone.
ARG WHEELS=
COPY . /src
RUN if [ -n "$WHEELS" ]; then \
        /opt/minibroker/bin/pip install --no-index --find-links "/src/$WHEELS" minibroker; \
    else \
        /opt/minibroker/bin/pip install /src; \
    fi \
 && /opt/minibroker/bin/minibroker --help >/dev/null

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="minibroker" \
      org.opencontainers.image.description="A Kafka-like distributed log in Python"
ENV PATH=/opt/minibroker/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 minibroker \
 && useradd --system --uid 10001 --gid minibroker --home-dir /var/lib/minibroker \
        --no-create-home --shell /usr/sbin/nologin minibroker \
 && install -d -o minibroker -g minibroker -m 0750 /var/lib/minibroker
USER minibroker:minibroker
WORKDIR /var/lib/minibroker
# A named volume mounted here starts as a copy of this (empty, minibroker-owned) folder.
VOLUME ["/var/lib/minibroker"]
EXPOSE 2181 2888 9092 19092
ENTRYPOINT ["minibroker"]
CMD ["--help"]
# Owned by root: the user runs the code but cannot change it.
COPY --from=install /opt/minibroker /opt/minibroker
