# The demo IdP + upstream used by docker-compose (the same binary `make run` starts).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p authgate-integration --bin authgate-demo

FROM debian:bookworm-slim
COPY --from=build /src/target/release/authgate-demo /usr/local/bin/authgate-demo
CMD ["authgate-demo"]
