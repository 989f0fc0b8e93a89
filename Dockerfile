# syntax=docker/dockerfile:1
# The clusterdns image: a glibc release build on Debian 12 (bookworm), run on distroless
# cc-debian12 (the same glibc 2.36, plus libgcc_s), as uid 65532 with only NET_BIND_SERVICE.
#
#   docker build -t clusterdns .
#
# The build is scripts/release-build.sh, the same command CI and the tests run. The pod's
# securityContext drops every capability but NET_BIND_SERVICE and sets a read-only root
# filesystem; the config comes from the mounted ConfigMap at /etc/clusterdns/clusterdns.yaml.
#
# Node-local mode (manifests/node-local/) writes node-cache's interception rules with the node's
# own tool, so the image carries iptables (legacy and nft flavours, with their -save tools) and
# nft, staged with their libraries and xtables extensions by scripts/image-netfilter-tools.sh.
# Links and addresses need no tool: clusterdns speaks rtnetlink itself. The kube-dns Deployment
# never runs them (it keeps only NET_BIND_SERVICE; the tools would fail without NET_ADMIN).

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin iptables nftables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/release-build.sh /out
# Port 53 as a non-root user: the file capability (granted only if the pod keeps
# NET_BIND_SERVICE in its bounding set, which the manifests' `capabilities.add` does).
RUN setcap cap_net_bind_service=+ep /out/clusterdns && getcap /out/clusterdns
RUN scripts/image-netfilter-tools.sh /out/netfilter

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/netfilter/ /
COPY --from=build /out/clusterdns /clusterdns
USER 65532:65532
EXPOSE 53/udp 53/tcp 9153 8080 8181
ENTRYPOINT ["/clusterdns"]
CMD ["serve", "--config", "/etc/clusterdns/clusterdns.yaml"]
