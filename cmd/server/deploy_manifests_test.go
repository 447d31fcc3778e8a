package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"
)

// knownSetting reports whether env is a variable of the configuration
// table (the README documents each: TestReadmeMatchesConfigAndCI).
func knownSetting(env string) bool {
	return slices.ContainsFunc(settings, func(s setting) bool { return s.env == env })
}

// yamlDocs parses every document of a YAML file into generic values.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s does not parse as YAML: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// dig walks nested maps and lists: a string key indexes a map, an int a
// list; nil when anything is missing.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func asInt(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case int64:
		return int(n)
	case uint64:
		return int(n)
	case float64:
		return int(n)
	}
	return -1
}

// shutdownTimeout is the shutdown timeout a deployment runs with: its own
// TOKENWARM_SHUTDOWN_TIMEOUT, else the default of the configuration table.
func shutdownTimeout(t *testing.T, set string) time.Duration {
	t.Helper()
	if set == "" {
		set = settingDefault("TOKENWARM_SHUTDOWN_TIMEOUT")
	}
	d, err := time.ParseDuration(set)
	if err != nil {
		t.Fatalf("TOKENWARM_SHUTDOWN_TIMEOUT %q: %v", set, err)
	}
	return d
}

// addrPort is the port of a TOKENWARM_ADDR value.
func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		t.Fatalf("TOKENWARM_ADDR %q has no port", addr)
	}
	return n
}

// The Dockerfile: a static build stage, a minimal non-root runtime image
// with a HEALTHCHECK that runs `tokenwarm healthcheck`, and only settings
// the server knows.
func TestDockerfileShape(t *testing.T) {
	var froms, envs []string
	var user, health, expose string
	for _, in := range readDockerfile(t) {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in.args)
		case "ENV":
			envs = append(envs, shellWords(t, in.args, nil)...)
		case "USER":
			user = in.args
		case "HEALTHCHECK":
			health = in.args
		case "EXPOSE":
			expose = in.args
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, FROM %v", froms)
	}
	if final := froms[len(froms)-1]; !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("runtime image %q: want distroless static (or scratch with CA certificates)", final)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("USER %q: the image must not run as root", user)
	}
	if !strings.Contains(health, `CMD ["/tokenwarm", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %q does not run tokenwarm healthcheck", health)
	}
	addr := ""
	for _, kv := range envs {
		k, v, _ := strings.Cut(kv, "=")
		if !knownSetting(k) {
			t.Errorf("Dockerfile ENV %s is not a setting of the server", k)
		}
		if k == "TOKENWARM_ADDR" {
			addr = v
		}
	}
	if addr == "" || expose != strconv.Itoa(addrPort(t, addr)) {
		t.Errorf("EXPOSE %q and TOKENWARM_ADDR %q disagree", expose, addr)
	}
}

// deploy/compose.yaml: Postgres, at least two tokenwarm replicas using
// only settings the server knows, going out through the egress proxy
// service, Prometheus with the rules, a stop grace period longer than the
// shutdown timeout, and every file it mounts present.
func TestComposeFile(t *testing.T) {
	docs := yamlDocs(t, filepath.Join(repoRoot, "deploy/compose.yaml"))
	if len(docs) != 1 {
		t.Fatalf("compose.yaml: %d documents", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	var replicas []string
	for name, s := range services {
		img, _ := dig(s, "image").(string)
		if dig(s, "build") == nil && !strings.HasPrefix(img, "tokenwarm") {
			continue
		}
		replicas = append(replicas, name)
		if ctx, _ := dig(s, "build", "context").(string); ctx != ".." {
			t.Errorf("%s: build context %q, want the repository (..)", name, ctx)
		}
		env, ok := dig(s, "environment").(map[string]any)
		if !ok {
			t.Fatalf("%s: environment is not a map", name)
		}
		for k := range env {
			if !knownSetting(k) {
				t.Errorf("%s: environment %s is not a setting of the server", name, k)
			}
		}
		for _, k := range []string{"DATABASE_URL", "TOKENWARM_SEAL_KEYS", "SALESFORCE_LOGIN_URL", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_PROXY_URL", "TOKENWARM_PUBLIC_URL"} {
			if env[k] == nil {
				t.Errorf("%s: %s is not set", name, k)
			}
		}
		proxy, _ := env["SALESFORCE_PROXY_URL"].(string)
		if u, err := url.Parse(proxy); err != nil || services[u.Hostname()] == nil {
			t.Errorf("%s: SALESFORCE_PROXY_URL %q does not name a service of the file", name, proxy)
		}
		if db, _ := env["DATABASE_URL"].(string); !strings.Contains(db, "@postgres:") {
			t.Errorf("%s: DATABASE_URL %q does not point at the postgres service", name, db)
		}
		grace, err := time.ParseDuration(fmt.Sprint(dig(s, "stop_grace_period")))
		shutdown, _ := env["TOKENWARM_SHUTDOWN_TIMEOUT"].(string)
		if err != nil || grace <= shutdownTimeout(t, shutdown) {
			t.Errorf("%s: stop_grace_period %v must exceed the shutdown timeout %s", name, dig(s, "stop_grace_period"), shutdownTimeout(t, shutdown))
		}
	}
	if len(replicas) < 2 {
		t.Errorf("tokenwarm replicas %v, want at least 2", replicas)
	}
	for _, want := range []string{"postgres", "prometheus"} {
		if services[want] == nil {
			t.Errorf("no %s service", want)
		}
	}
	// Every file or directory mounted from the repository exists.
	for name, s := range services {
		vols, _ := dig(s, "volumes").([]any)
		for _, v := range vols {
			src, _, _ := strings.Cut(fmt.Sprint(v), ":")
			if strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join(repoRoot, "deploy", src)); err != nil {
					t.Errorf("%s mounts %s: %v", name, src, err)
				}
			}
		}
	}
}

// deploy/kubernetes/: every manifest parses and is listed in the
// kustomization; the Deployment runs at least two replicas, probes /readyz
// and /healthz on the port of TOKENWARM_ADDR, gets only settings the server
// knows (directly or from the ConfigMap and Secret it names), and its
// grace period outlasts the shutdown timeout plus the preStop pause; the
// Secret holds the seal keys and the Salesforce credentials; a
// PodDisruptionBudget and a Service select its pods.
func TestKubernetesManifests(t *testing.T) {
	dir := filepath.Join(repoRoot, "deploy/kubernetes")
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	byKind := map[string][]map[string]any{}
	var kustomization map[string]any
	for _, f := range files {
		for _, doc := range yamlDocs(t, f) {
			if filepath.Base(f) == "kustomization.yaml" {
				kustomization = doc
				continue
			}
			kind, _ := doc["kind"].(string)
			byKind[kind] = append(byKind[kind], doc)
		}
	}
	var listed []string
	for _, r := range dig(kustomization, "resources").([]any) {
		listed = append(listed, fmt.Sprint(r))
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(listed, b) {
			t.Errorf("%s is not in kustomization.yaml's resources", b)
		}
	}
	named := func(kind, name string) map[string]any {
		for _, d := range byKind[kind] {
			if dig(d, "metadata", "name") == name {
				return d
			}
		}
		t.Fatalf("no %s named %q in deploy/kubernetes", kind, name)
		return nil
	}
	if len(byKind["Deployment"]) != 1 {
		t.Fatalf("want one Deployment, got %d", len(byKind["Deployment"]))
	}
	dep := byKind["Deployment"][0]
	if n := asInt(dig(dep, "spec", "replicas")); n < 2 {
		t.Errorf("replicas %d, want at least 2", n)
	}
	pod := dig(dep, "spec", "template", "spec")
	podLabels, _ := dig(dep, "spec", "template", "metadata", "labels").(map[string]any)
	if dig(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("the pod does not require a non-root user")
	}
	c := dig(pod, "containers", 0)

	// The environment: direct entries and whole ConfigMaps and Secrets.
	env := map[string]string{}
	for _, e := range asList(dig(c, "env")) {
		env[fmt.Sprint(dig(e, "name"))] = fmt.Sprint(dig(e, "value"))
	}
	secretKeys := map[string]bool{}
	for _, from := range asList(dig(c, "envFrom")) {
		if name, ok := dig(from, "configMapRef", "name").(string); ok {
			for k, v := range dig(named("ConfigMap", name), "data").(map[string]any) {
				env[k] = fmt.Sprint(v)
			}
		}
		if name, ok := dig(from, "secretRef", "name").(string); ok {
			for k := range dig(named("Secret", name), "stringData").(map[string]any) {
				env[k], secretKeys[k] = "(secret)", true
			}
		}
	}
	for k := range env {
		if !knownSetting(k) {
			t.Errorf("the Deployment's environment has %s, which is not a setting of the server", k)
		}
	}
	for _, k := range []string{"TOKENWARM_SEAL_KEYS", "DATABASE_URL", "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET"} {
		if !secretKeys[k] {
			t.Errorf("%s does not come from a Secret", k)
		}
	}

	// Probes on the container port that TOKENWARM_ADDR listens on.
	port := addrPort(t, env["TOKENWARM_ADDR"])
	portName := ""
	for _, p := range asList(dig(c, "ports")) {
		if asInt(dig(p, "containerPort")) == port {
			portName, _ = dig(p, "name").(string)
		}
	}
	if portName == "" {
		t.Fatalf("no named container port %d (TOKENWARM_ADDR %s)", port, env["TOKENWARM_ADDR"])
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if got := dig(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path %v, want %s", probe, got, path)
		}
		if got := dig(c, probe, "httpGet", "port"); got != portName && asInt(got) != port {
			t.Errorf("%s port %v, want %s", probe, got, portName)
		}
	}

	// SIGTERM comes after the preStop pause; the server then needs up to
	// its shutdown timeout.
	grace := time.Duration(asInt(dig(pod, "terminationGracePeriodSeconds"))) * time.Second
	preStop := time.Duration(max(0, asInt(dig(c, "lifecycle", "preStop", "sleep", "seconds")))) * time.Second
	if shutdown := shutdownTimeout(t, env["TOKENWARM_SHUTDOWN_TIMEOUT"]); grace <= preStop+shutdown {
		t.Errorf("terminationGracePeriodSeconds %s must exceed the preStop pause %s + TOKENWARM_SHUTDOWN_TIMEOUT %s", grace, preStop, shutdown)
	}

	selects := func(what string, selector any) {
		sel, _ := selector.(map[string]any)
		if len(sel) == 0 {
			t.Errorf("%s has no selector", what)
		}
		for k, v := range sel {
			if podLabels[k] != v {
				t.Errorf("%s selects %s=%v, which the Deployment's pods do not have", what, k, v)
			}
		}
	}
	if len(byKind["PodDisruptionBudget"]) != 1 {
		t.Fatal("want one PodDisruptionBudget")
	}
	pdb := byKind["PodDisruptionBudget"][0]
	selects("the PodDisruptionBudget", dig(pdb, "spec", "selector", "matchLabels"))
	if n := asInt(dig(pdb, "spec", "minAvailable")); dig(pdb, "spec", "maxUnavailable") == nil && (n < 1 || n >= asInt(dig(dep, "spec", "replicas"))) {
		t.Error("the PodDisruptionBudget lets every replica go at once (or none)")
	}
	if len(byKind["Service"]) != 1 {
		t.Fatal("want one Service")
	}
	svc := byKind["Service"][0]
	selects("the Service", dig(svc, "spec", "selector"))
	if tp := dig(svc, "spec", "ports", 0, "targetPort"); tp != portName && asInt(tp) != port {
		t.Errorf("the Service targets port %v, want %s", tp, portName)
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}
