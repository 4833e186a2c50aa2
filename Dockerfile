# PostgreSQL 15 with backstop built, installed and preloaded.
# The build runs the same steps as scripts/setup.sh (scripts/lib.sh), with an optimised build.
#   docker build -t backstop .
#   docker run -e POSTGRES_PASSWORD=... -e BACKSTOP_ENCRYPTION_RECIPIENTS=age1... \
#              -v pgdata:/var/lib/postgresql/data -v repo:/var/lib/backstop backstop

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN bash -c 'source scripts/lib.sh && ensure_debian_packages && ensure_rust && ensure_cargo_pgrx \
             && BACKSTOP_PROFILE=release install_backstop' \
 && mkdir -p /out/lib /out/extension /out/bin \
 && cp /usr/lib/postgresql/15/lib/backstop.so /out/lib/ \
 && cp /usr/share/postgresql/15/extension/backstop.control /usr/share/postgresql/15/extension/backstop--*.sql /out/extension/ \
 && cp /usr/local/bin/backstop /out/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/lib/backstop/repository \
 && chown -R postgres:postgres /var/lib/postgresql /var/lib/backstop
COPY --from=build /out/lib/ /usr/lib/postgresql/15/lib/
COPY --from=build /out/extension/ /usr/share/postgresql/15/extension/
COPY --from=build /out/bin/backstop /usr/local/bin/backstop
COPY scripts/lib.sh /usr/local/share/backstop/lib.sh
COPY docker/entrypoint.sh /usr/local/bin/backstop-entrypoint
ENV PGDATA=/var/lib/postgresql/data \
    BACKSTOP_REPOSITORY=file:///var/lib/backstop/repository
USER postgres
VOLUME ["/var/lib/postgresql/data", "/var/lib/backstop"]
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/backstop-entrypoint"]
