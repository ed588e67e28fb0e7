#!/usr/bin/env bash
# Checks deploy/kubernetes/ without a cluster (CI runs it from .ci/run; docs/KUBERNETES.md,
# "What was validated"):
#
#   1. base/prometheusrule.yaml is what gen-prometheusrule.sh makes from deploy/alerts.yml;
#   2. `kubectl kustomize` renders base/ and example/ (the overlay an installation writes);
#   3. every object of both, and the Secrets make-secrets.sh makes, validates strictly (unknown
#      fields are errors) against the schemas of Kubernetes $K8S_VERSION (kubernetes-validate);
#      the Prometheus Operator's kinds have no schema there (see below): the PrometheusRule's
#      rules pass `promtool check rules` instead, and the ServiceMonitor is checked by
#      ferry/tests/kubernetes.rs;
#   4. checkov finds nothing in the example rendering beyond what checkov.yaml waives.
#
# kubernetes-validate and checkov come from PyPI, pinned, in a venv kept at $FERRY_K8S_VENV
# (default: target/k8s-check-venv, made on first use). kubectl and promtool (Debian's
# prometheus package) must be installed; make-secrets.sh needs openssl and the ferry binary.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
K8S_VERSION=1.32.0
KUBERNETES_VALIDATE=1.37.0
CHECKOV=3.3.30
venv=${FERRY_K8S_VENV:-${CARGO_TARGET_DIR:-$repo/target}/k8s-check-venv}

say() { printf -- '-- %s\n' "$*"; }
die() { printf 'check.sh: %s\n' "$*" >&2; exit 1; }
command -v kubectl >/dev/null || die "kubectl is missing"
command -v promtool >/dev/null || die "promtool is missing (Debian's prometheus package)"

if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE" \
  || ! "$venv/bin/checkov" --version 2>/dev/null | grep -q "$CHECKOV"; then
  say "installing kubernetes-validate $KUBERNETES_VALIDATE and checkov $CHECKOV in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE" "checkov==$CHECKOV"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

say "prometheusrule.yaml is up to date with deploy/alerts.yml"
"$here/gen-prometheusrule.sh" --check

for overlay in base example; do
  say "kubectl kustomize $overlay"
  kubectl kustomize "$here/$overlay" >"$work/$overlay.yaml"
done
say "make-secrets.sh (throwaway secrets)"
"$here/make-secrets.sh" --namespace ferry --out "$work/secrets"

# Splits a rendering into the objects with a Kubernetes schema (core.yaml) and the Prometheus
# Operator's, whose schemas are CRDs of that project (not in kubernetes-validate, and not
# vendored here); writes the PrometheusRule's rules as a Prometheus rule file.
split() {
  "$venv/bin/python" - "$1" "$2" <<'PY'
import sys, yaml
source, prefix = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(source)) if d]
core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
crds = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
kinds = sorted(d["kind"] for d in crds)
if kinds != ["PrometheusRule", "ServiceMonitor"]:
    sys.exit(f"unexpected Prometheus Operator objects: {kinds}")
yaml.safe_dump_all(core, open(prefix + ".core.yaml", "w"))
rule = next(d for d in crds if d["kind"] == "PrometheusRule")
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(prefix + ".rules.yaml", "w"))
print(f"{len(core)} objects with Kubernetes schemas; skipped (no schema): {', '.join(kinds)}")
PY
}

validate() {
  local file=$1 output
  # kubernetes-validate exits 0 on a kind it has no schema for (a warning): that fails here.
  if ! output=$("$venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$file" 2>&1); then
    printf '%s\n' "$output" >&2
    die "$file does not validate against Kubernetes $K8S_VERSION"
  fi
  if grep -q WARN <<<"$output"; then
    printf '%s\n' "$output" >&2
    die "kubernetes-validate warned about $file"
  fi
  printf '%s\n' "$output" | sed 's/^/   /'
}

for overlay in base example; do
  say "kubernetes-validate --strict ($overlay, Kubernetes $K8S_VERSION)"
  split "$work/$overlay.yaml" "$work/$overlay"
  validate "$work/$overlay.core.yaml"
  say "promtool check rules ($overlay's PrometheusRule)"
  promtool check rules "$work/$overlay.rules.yaml"
done
say "kubernetes-validate --strict (make-secrets.sh's Secrets)"
validate "$work/secrets/secrets.yaml"

say "checkov (example rendering; waivers in checkov.yaml)"
(cd "$work" && "$venv/bin/checkov" --config-file "$here/checkov.yaml" -f example.yaml)
say "deploy/kubernetes is valid"
