# The OCI image Istio pulls (WasmPlugin `url: oci://…`): the module alone, named plugin.wasm.
# Build from the repository root after `make build`:
#   docker build -f envoy/oci.Dockerfile -t registry.example.com/authgate:0.1.0 .
# `make wasm-sha256` prints the module's SHA-256 for the manifest.
FROM scratch
COPY target/authgate.wasm ./plugin.wasm
