#!/usr/bin/env python3
"""The project's own checks of the Dockerfile and deploy/ (docs/deployment.md).

Run by scripts/check-deploy.sh with the venv of scripts/python-tools.sh
(PyYAML comes with kubernetes-validate). Generic rules are hadolint's and the
Kubernetes schemas' business; this file checks what only this project knows:

  check              the Dockerfile contract (multi-stage, pinned base images,
                     non-root USER, HEALTHCHECK on admin /healthz, the
                     `protogate check` step, the release build), .dockerignore
                     letting in every COPY source, listeners of the baked and
                     Kubernetes configs, probes, security context, the
                     descriptors ConfigMap equal to descriptors/, kustomization
                     listing every manifest.
  materialize DIR    writes what `protogate check` is then run on:
                     DIR/image/        the files the Dockerfile COPYs into
                                       /etc/protogate, laid out the same way;
                     DIR/k8s/          the ConfigMaps' files as the pod sees them;
                     DIR/k8s-redis/    the same config with its commented
                                       `rate_limits` Redis block uncommented.
  write              regenerates deploy/kubernetes/descriptors-configmap.yaml
                     from descriptors/.

Exits 1 with one line per problem.
"""

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
KUBE = ROOT / "deploy" / "kubernetes"
DESCRIPTORS = ROOT / "descriptors"
DESCRIPTORS_CM = KUBE / "descriptors-configmap.yaml"
SET_EXTENSIONS = (".binpb", ".pb", ".desc", ".protoset")
IMAGE_ROOT = "/etc/protogate"
PUBLIC_LISTEN = "0.0.0.0:8080"
ADMIN_LISTEN = "0.0.0.0:9901"

problems = []


def problem(message):
    problems.append(message)


# --- Dockerfile -------------------------------------------------------------


def dockerfile_instructions(text):
    """(instruction, arguments) pairs, continuation lines joined, comments and
    parser directives dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    if current:
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def expand(value, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def split_flags(rest):
    """(flags, operands) of COPY/FROM-like arguments; JSON form included."""
    rest = rest.strip()
    if rest.startswith("["):
        import json

        return [], json.loads(rest)
    words = rest.split()
    flags = [w for w in words if w.startswith("--")]
    return flags, [w for w in words if not w.startswith("--")]


def check_dockerfile():
    if not DOCKERFILE.is_file():
        problem("Dockerfile: missing at the repository root")
        return []
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    global_args, stages = {}, []
    for word, rest in instructions:
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        elif word == "FROM":
            _, operands = split_flags(rest)
            image = expand(operands[0], global_args)
            name = operands[2] if len(operands) >= 3 and operands[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "body": []})
        elif stages:
            stages[-1]["body"].append((word, rest))
        else:
            problem(f"Dockerfile: {word} before the first FROM")

    if len(stages) < 2:
        problem(f"Dockerfile: must be multi-stage (a build stage and a runtime stage), has {len(stages)} FROM")
        return []
    names = {s["name"] for s in stages if s["name"]}
    for stage in stages:
        image = stage["image"]
        if image in names or image == "scratch":
            continue
        if "$" in image:
            problem(f"Dockerfile: FROM {image}: a variable without a default")
            continue
        if "@" in image:
            continue  # pinned by digest
        last = image.rsplit("/", 1)[-1]  # "registry:5000/image:tag": the tag is after the last "/"
        tag = last.partition(":")[2]
        if not tag:
            problem(f"Dockerfile: FROM {image}: no tag (that is `latest`); pin the image")
        elif tag == "latest":
            problem(f"Dockerfile: FROM {image}: `latest` is not a pinned image")

    final = stages[-1]["body"]
    users = [rest for word, rest in final if word == "USER"]
    if not users:
        problem("Dockerfile: the runtime stage sets no USER, so it runs as root")
    elif users[-1].split(":")[0] in ("root", "0"):
        problem(f"Dockerfile: the runtime stage runs as USER {users[-1]}")

    healthchecks = [rest for word, rest in final if word == "HEALTHCHECK"]
    if not healthchecks or healthchecks[-1].upper().startswith("NONE"):
        problem("Dockerfile: the runtime stage has no HEALTHCHECK")
    elif "/healthz" not in healthchecks[-1] or "9901" not in healthchecks[-1]:
        problem("Dockerfile: HEALTHCHECK must probe admin /healthz on port 9901")

    runs = [rest for stage in stages for word, rest in stage["body"] if word == "RUN"]
    if not any(re.search(r"cargo[\"', ]+build\b.*--release\b.*--locked\b.*--bin[\"', ]+protogate\b", r) for r in runs):
        problem("Dockerfile: no RUN `cargo build --release --locked --bin protogate`")

    copies = []  # (flags, sources, destination) of the runtime stage
    for stage in stages:
        for word, rest in stage["body"]:
            if word in ("COPY", "ADD"):
                flags, operands = split_flags(rest)
                if len(operands) < 2:
                    problem(f"Dockerfile: {word} {rest}: needs a source and a destination")
                    continue
                if stage is stages[-1]:
                    copies.append((flags, operands[:-1], operands[-1]))
                if not any(f.startswith("--from") for f in flags):
                    check_dockerignore(operands[:-1])
    patterns = ignore_patterns()
    for needed in ("target", ".git"):
        if not ignored(needed, patterns):
            problem(f".dockerignore: does not exclude {needed}/")

    check_declared_targets(stages[0]["body"])

    check_runs = [r for r in runs if re.search(r"protogate[\"', ]+check\b", r)]
    if not check_runs:
        problem("Dockerfile: no RUN of `protogate check` on the baked config: a bad folder would not fail the build")
    baked = {dest: sources for flags, sources, dest in copies if not any(f.startswith("--from") for f in flags)}
    for run in check_runs:
        config = re.search(r"--config[\"', =]+([^\"', \]]+)", run)
        if not config:
            problem("Dockerfile: `protogate check` runs without --config: give the baked config's path")
        elif config.group(1) not in baked:
            problem(f"Dockerfile: `protogate check --config {config.group(1)}`: no COPY puts a file there")
    if check_runs and not any(run_index_after_copies(stages[-1]["body"])):
        problem("Dockerfile: `protogate check` must run in the runtime stage after the config and descriptors are copied")

    exposed = {p.split("/")[0] for word, rest in final if word == "EXPOSE" for p in rest.split()}
    for port in ("8080", "9901"):
        if port not in exposed:
            problem(f"Dockerfile: EXPOSE {port} missing")
    if not any(word in ("ENTRYPOINT", "CMD") for word, _ in final):
        problem("Dockerfile: the runtime stage has neither ENTRYPOINT nor CMD")

    for flags, sources, dest in copies:
        if not any(f.startswith("--from") for f in flags) and dest.endswith(".yaml"):
            config = yaml.safe_load((ROOT / sources[0]).read_text()) or {}
            check_listeners(f"{sources[0]} (baked as {dest})", config)
    return copies


def check_declared_targets(builder):
    """cargo refuses a manifest whose declared [[bench]]/[[test]]/[[example]]
    files are missing, even to build only the binary: the builder must copy
    them before its first `cargo build`."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11: this rule is skipped
        return
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    copied = []
    for word, rest in builder:
        if word == "RUN" and "cargo" in rest and "build" in rest:
            break
        if word == "COPY":
            copied.extend(s.strip("/") for s in split_flags(rest)[1][:-1])
    folders = {"bench": "benches", "test": "tests", "example": "examples", "bin": "src/bin"}
    for kind, folder in folders.items():
        for target in manifest.get(kind, []):
            path = target.get("path") or f"{folder}/{target['name']}.rs"
            if kind == "bin" and path.startswith("src/"):
                continue  # src/ is stood in for by the dependency build
            if not any(path == c or path.startswith(c + "/") for c in copied):
                problem(f"Dockerfile: Cargo.toml declares {path}; copy it before the builder's first cargo build")


def run_index_after_copies(body):
    """True for a `protogate check` RUN that follows every COPY of the stage."""
    last_copy = max((i for i, (word, _) in enumerate(body) if word == "COPY"), default=-1)
    for i, (word, rest) in enumerate(body):
        if word == "RUN" and re.search(r"protogate[\"', ]+check\b", rest):
            yield i > last_copy


def ignore_patterns():
    if not DOCKERIGNORE.is_file():
        problem(".dockerignore: missing (the build context would hold target/ and .git)")
        return []
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):
                    regex = regex[:-2] + "(.*/)?"
                    i += 1
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((negate, re.compile(regex + r"\Z")))
    return patterns


def ignored(path, patterns):
    """Docker's rule: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, regex in patterns:
        if any(regex.match(p) for p in prefixes):
            result = not negate
    return result


def check_dockerignore(sources):
    patterns = ignore_patterns()
    for source in sources:
        source = source.strip("/")
        tracked = subprocess.run(
            ["git", "ls-files", "--", source], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.split()
        paths = tracked or [source]
        for path in paths:
            if ignored(path, patterns):
                problem(f".dockerignore: excludes {path}, which the Dockerfile copies")
                break


# --- configs ----------------------------------------------------------------


def check_listeners(where, config):
    listen = str(config.get("listen", "127.0.0.1:8080"))
    admin = str((config.get("admin") or {}).get("listen", "127.0.0.1:9901"))
    if listen != PUBLIC_LISTEN:
        problem(f"{where}: listen is {listen}; in a container it must be {PUBLIC_LISTEN}")
    if admin != ADMIN_LISTEN:
        problem(f"{where}: admin.listen is {admin}; probes need {ADMIN_LISTEN}")


def seconds(duration):
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(duration))
    if not match:
        return None
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return float(match.group(1)) * factor


# --- Kubernetes ---------------------------------------------------------------


def load_manifests():
    docs = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc.get("kind"), (doc.get("metadata") or {}).get("name"))] = (path.name, doc)
    return docs


def descriptor_files():
    files = sorted(
        p.relative_to(DESCRIPTORS).as_posix()
        for p in DESCRIPTORS.rglob("*")
        if p.is_file() and p.suffix in SET_EXTENSIONS and not any(part.startswith(".") for part in p.parts)
    )
    return files


def configmap_key(relative):
    return relative.replace("/", ".")


def render_descriptors_configmap():
    lines = [
        "# Generated from descriptors/ by `scripts/check-deploy.sh --write`; do not edit.",
        "# The test script fails when this file and descriptors/ differ.",
        "# Binary FileDescriptorSets go under binaryData (base64). ConfigMap keys",
        "# cannot contain \"/\": deployment.yaml maps each key back to its path.",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: protogate-descriptors",
        "  labels:",
        "    app.kubernetes.io/name: protogate",
        "    app.kubernetes.io/component: gateway",
        "binaryData:",
    ]
    for relative in descriptor_files():
        encoded = base64.b64encode((DESCRIPTORS / relative).read_bytes()).decode()
        # One line, as `kubectl create configmap --from-file` writes it: the
        # API server's base64 decoder skips line breaks but not spaces, so a
        # folded (>) scalar would break it.
        lines.append(f"  {configmap_key(relative)}: {encoded}")
    return "\n".join(lines) + "\n"


def container_of(deployment):
    containers = deployment["spec"]["template"]["spec"].get("containers") or []
    return next((c for c in containers if c.get("name") == "protogate"), containers[0] if containers else {})


def check_kubernetes():
    kustomization = KUBE / "kustomization.yaml"
    files = sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")
    if kustomization.is_file():
        listed = sorted((yaml.safe_load(kustomization.read_text()) or {}).get("resources") or [])
        if listed != files:
            problem(f"deploy/kubernetes/kustomization.yaml: resources {listed} differ from the manifests {files}")
    else:
        problem("deploy/kubernetes/kustomization.yaml: missing")

    if not DESCRIPTORS_CM.is_file() or DESCRIPTORS_CM.read_text() != render_descriptors_configmap():
        problem(
            "deploy/kubernetes/descriptors-configmap.yaml: differs from descriptors/; "
            "regenerate it with scripts/check-deploy.sh --write"
        )

    docs = load_manifests()
    kinds = {kind for kind, _ in docs}
    for kind in ("Deployment", "ConfigMap", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        if kind not in kinds:
            problem(f"deploy/kubernetes: no {kind}")
    if ("Deployment", "protogate") not in docs:
        problem("deploy/kubernetes: no Deployment named protogate")
        return None
    where, deployment = docs[("Deployment", "protogate")]
    pod = deployment["spec"]["template"]["spec"]
    container = container_of(deployment)
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = (container.get(probe) or {}).get("httpGet") or {}
        port = get.get("port")
        port = ports.get(port, port)
        if get.get("path") != path or port != 9901:
            problem(f"{where}: {probe} must be an httpGet of {path} on the admin port 9901")

    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}
    if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))):
        problem(f"{where}: securityContext.runAsNonRoot must be true")
    if not sc.get("readOnlyRootFilesystem"):
        problem(f"{where}: container securityContext.readOnlyRootFilesystem must be true")

    # Where the config and the descriptors land in the pod.
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    layout = {}  # ConfigMap name -> (mount path, {key: path})
    for name, volume in volumes.items():
        cm = volume.get("configMap")
        if cm and name in mounts:
            items = {i["key"]: i["path"] for i in cm.get("items") or []}
            layout[cm["name"]] = (mounts[name], items)

    args = container.get("args") or []
    config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    config_cm = docs.get(("ConfigMap", "protogate-config"))
    config = None
    if not config_path:
        problem(f"{where}: the container's args give no --config")
    elif not config_cm or "protogate-config" not in layout:
        problem(f"{where}: the ConfigMap protogate-config is not mounted")
    else:
        mount, items = layout["protogate-config"]
        key = os.path.basename(config_path)
        if os.path.dirname(config_path) != mount.rstrip("/") or key not in config_cm[1].get("data", {}):
            problem(f"{where}: --config {config_path} is not a key of protogate-config mounted at {mount}")
        else:
            config = yaml.safe_load(config_cm[1]["data"][key]) or {}
            check_listeners(f"{config_cm[0]} ({key})", config)
            descriptors = (config.get("descriptors") or {}) if isinstance(config.get("descriptors"), dict) else {
                "path": config.get("descriptors")
            }
            if "protogate-descriptors" not in layout:
                problem(f"{where}: the ConfigMap protogate-descriptors is not mounted")
            elif descriptors.get("path") != layout["protogate-descriptors"][0]:
                problem(
                    f"{config_cm[0]}: descriptors.path {descriptors.get('path')} is not where "
                    f"protogate-descriptors is mounted ({layout['protogate-descriptors'][0]})"
                )
            grace = pod.get("terminationGracePeriodSeconds", 30)
            drain = seconds(config.get("shutdown_timeout", "30s")) or 30
            pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
            pause = seconds(pre_stop[-1]) if pre_stop and pre_stop[0] == "sleep" else 0
            if pause is None or grace <= drain + (pause or 0):
                problem(
                    f"{where}: terminationGracePeriodSeconds {grace} must exceed the preStop pause "
                    f"({pause}s) plus shutdown_timeout ({drain:g}s)"
                )

    if "protogate-descriptors" in layout:
        expected = {configmap_key(r): r for r in descriptor_files()}
        if layout["protogate-descriptors"][1] != expected:
            problem(
                f"{where}: the items of the protogate-descriptors volume must map each key to its path: {expected}"
            )
    return docs, layout, config_cm


# --- materialize --------------------------------------------------------------


def materialize(out):
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)

    # The image: every COPY of the build context into /etc/protogate.
    image = out / "image"
    for flags, sources, dest in check_dockerfile():
        if any(f.startswith("--from") for f in flags) or not dest.startswith(IMAGE_ROOT):
            continue
        target = image / os.path.relpath(dest, IMAGE_ROOT)
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)

    # The pod: the ConfigMaps' keys at their mounted paths, under out/k8s.
    result = check_kubernetes()
    if not result:
        return
    docs, layout, config_cm = result
    k8s = out / "k8s"
    for (kind, name), (_, doc) in docs.items():
        if kind != "ConfigMap" or name not in layout:
            continue
        mount, items = layout[name]
        data = {k: v.encode() for k, v in (doc.get("data") or {}).items()}
        data.update({k: base64.b64decode(v, validate=True) for k, v in (doc.get("binaryData") or {}).items()})
        for key, value in data.items():
            target = k8s / mount.lstrip("/") / items.get(key, key)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(value)

    # The same config with its documented Redis option switched on.
    if config_cm:
        text = config_cm[1]["data"]["protogate.yaml"]
        lines, inside, found = [], False, False
        for line in text.splitlines():
            if line.startswith("# rate_limits:"):
                inside = found = True
            elif inside and not line.startswith("#   "):
                inside = False
            lines.append(line[2:] if inside else line)
        if not found:
            problem(f"{config_cm[0]}: no commented `# rate_limits:` block showing the Redis backend")
        else:
            redis = out / "k8s-redis" / "protogate.yaml"
            redis.parent.mkdir(parents=True, exist_ok=True)
            redis.write_text("\n".join(lines) + "\n")


def main(argv):
    command = argv[1] if len(argv) > 1 else "check"
    if command == "write":
        DESCRIPTORS_CM.write_text(render_descriptors_configmap())
        print(f"wrote {DESCRIPTORS_CM.relative_to(ROOT)} from descriptors/ ({len(descriptor_files())} files)")
    elif command == "check":
        check_dockerfile()
        check_kubernetes()
    elif command == "materialize" and len(argv) == 3:
        materialize(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for message in dict.fromkeys(problems):
        print(f"error: {message}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
