# The demo IdP + upstream and the reference authorization service used by docker-compose (the
# same binaries `make run` starts).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p authgate-integration --bin authgate-demo --bin authgate-authz

FROM debian:bookworm-slim
COPY --from=build /src/target/release/authgate-demo /usr/local/bin/authgate-demo
COPY --from=build /src/target/release/authgate-authz /usr/local/bin/authgate-authz
CMD ["authgate-demo"]
