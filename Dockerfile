# PostgreSQL 15 with backstop installed from its Debian package and preloaded.
# The build stage makes the packages with scripts/package.sh (the same script a release uses); the
# image installs them (the extension's and the CLI's) with apt-get, which pulls PostgreSQL 15 in as its dependency: no Rust toolchain
# and no build output other than the package reaches the image.
#   docker build -t backstop .
#   docker run -e POSTGRES_PASSWORD=... -e BACKSTOP_ENCRYPTION_RECIPIENTS=age1... \
#              -v pgdata:/var/lib/postgresql/data -v repo:/var/lib/backstop backstop

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN bash -c 'source scripts/lib.sh && ensure_debian_packages && ensure_rust && scripts/package.sh /out'

FROM debian:bookworm-slim
COPY --from=build /out/ /tmp/backstop-package/
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
      /tmp/backstop-package/backstop-cli_*.deb /tmp/backstop-package/postgresql-15-backstop_*.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/backstop-package \
 && mkdir -p /var/lib/postgresql/data /var/lib/backstop/repository \
 && chown -R postgres:postgres /var/lib/postgresql /var/lib/backstop
COPY scripts/lib.sh /usr/local/share/backstop/lib.sh
COPY docker/entrypoint.sh /usr/local/bin/backstop-entrypoint
ENV PGDATA=/var/lib/postgresql/data \
    BACKSTOP_REPOSITORY=file:///var/lib/backstop/repository
USER postgres
VOLUME ["/var/lib/postgresql/data", "/var/lib/backstop"]
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/backstop-entrypoint"]
