# The collector's image, for users who build their own (not built in CI here: these machines
# have no container runtime and reach no container registry).
#   docker build -t registry.example.com/collector:0.1.0 .
# Then set that image in deploy/kubernetes/30-daemonset.yaml.

# Build: Debian 12 with rustup; `cargo xtask build` installs the rest of the toolchain
# (nightly rust-src, LLVM 22's development files, bpf-linker), as on a host.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo xtask build

# Run: only what the binary links (glibc, libgcc_s); the eBPF object is embedded in it.
FROM gcr.io/distroless/cc-debian12 AS run
COPY --from=build /src/target/release/collector /usr/local/bin/collector
COPY examples/collector.toml /usr/local/share/doc/collector/collector.toml
# Root in the container, with exactly the capabilities the DaemonSet adds; the agent gives
# them up once its probes are attached.
USER 0
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/collector"]
CMD ["--config", "/etc/collector/collector.toml"]
