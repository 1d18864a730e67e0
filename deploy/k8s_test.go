package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8syaml "sigs.k8s.io/yaml"
)

// k8sObject is one document of a manifest, decoded strictly into its
// Kubernetes type: a misspelled or misplaced field is an error, as it is
// for `kubectl apply --validate=strict`.
type k8sObject struct {
	file string
	meta metav1.TypeMeta
	obj  any
}

// k8sTypes are the kinds deploy/k8s may hold.
var k8sTypes = map[string]func() any{
	"v1/Namespace":                  func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"apps/v1/DaemonSet":             func() any { return &appsv1.DaemonSet{} },
	"batch/v1/Job":                  func() any { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

func loadK8s(t *testing.T) []k8sObject {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	var out []k8sObject
	for _, f := range files {
		if filepath.Base(f) == "nats-values.yaml" {
			continue // Helm values, checked by TestK8sNATSValues
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if doc == nil {
				continue
			}
			raw, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			var tm metav1.TypeMeta
			if err := k8syaml.Unmarshal(raw, &tm); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			newObj, ok := k8sTypes[tm.APIVersion+"/"+tm.Kind]
			if !ok {
				t.Fatalf("%s document %d: unexpected apiVersion %q kind %q", f, i, tm.APIVersion, tm.Kind)
			}
			obj := newObj()
			if err := k8syaml.UnmarshalStrict(raw, obj); err != nil {
				t.Errorf("%s: %s: %v", f, tm.Kind, err)
				continue
			}
			out = append(out, k8sObject{file: f, meta: tm, obj: obj})
		}
	}
	return out
}

// TestK8sManifests decodes every manifest strictly and checks what
// docs/deploy.md promises of them.
func TestK8sManifests(t *testing.T) {
	objs := loadK8s(t)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.meta.Kind]++
		om := metaOf(o.obj)
		if om.Name == "" {
			t.Errorf("%s: a %s without metadata.name", o.file, o.meta.Kind)
		}
		if o.meta.Kind != "Namespace" && om.Namespace != "orderly" {
			t.Errorf("%s: %s %s is in namespace %q, not orderly", o.file, o.meta.Kind, om.Name, om.Namespace)
		}
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			checkSelector(t, o, v.Spec.Selector, v.Spec.Template.Labels)
			checkPod(t, o, v.Spec.Template.Spec)
			if p := v.Spec.Template.Spec.Containers[0].ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: the API's readiness probe is not GET /readyz", o.file)
			}
		case *appsv1.DaemonSet:
			checkSelector(t, o, v.Spec.Selector, v.Spec.Template.Labels)
			checkPod(t, o, v.Spec.Template.Spec)
			env := v.Spec.Template.Spec.Containers[0].Env
			i := slices.IndexFunc(env, func(e corev1.EnvVar) bool { return e.Name == "NODE_NAME" })
			if i < 0 || env[i].ValueFrom == nil || env[i].ValueFrom.FieldRef == nil || env[i].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
				t.Errorf("%s: NODE_NAME does not come from spec.nodeName", o.file)
			}
			if !slices.ContainsFunc(env, func(e corev1.EnvVar) bool { return e.Name == "ORDERLY_HOST" && e.Value == "$(NODE_NAME)" }) {
				t.Errorf("%s: the worker's host id is not the node name", o.file)
			}
			// Orders run in the worker's container: it must not see the
			// seeds of every node, only the one its init container copied.
			for _, c := range v.Spec.Template.Spec.Containers {
				for _, m := range c.VolumeMounts {
					i := slices.IndexFunc(v.Spec.Template.Spec.Volumes, func(vol corev1.Volume) bool { return vol.Name == m.Name })
					if i >= 0 && v.Spec.Template.Spec.Volumes[i].Secret != nil && v.Spec.Template.Spec.Volumes[i].Secret.SecretName == "orderly-workers" {
						t.Errorf("%s: container %s mounts every node's seeds", o.file, c.Name)
					}
				}
			}
		case *batchv1.Job:
			checkPod(t, o, v.Spec.Template.Spec)
			// The migrations first, then the workers' role
			// (TestK8sWorkerRole).
			if c := v.Spec.Template.Spec.InitContainers; len(c) == 0 || len(c[0].Args) < 2 || c[0].Args[0] != "migrate" || c[0].Args[1] != "up" {
				t.Errorf("%s: the Job's first init container does not run migrate up", o.file)
			}
		case *policyv1.PodDisruptionBudget:
			if v.Spec.Selector == nil || v.Spec.MinAvailable == nil && v.Spec.MaxUnavailable == nil {
				t.Errorf("%s: PDB without selector or budget", o.file)
			}
		}
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "Job", "DaemonSet"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in deploy/k8s", k)
		}
	}
}

// TestK8sManifestTypo proves the strict decoding catches a misspelled
// field.
func TestK8sManifestTypo(t *testing.T) {
	bad := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n        - name: x\n          readinesProbe: {}\n")
	if err := k8syaml.UnmarshalStrict(bad, &appsv1.Deployment{}); err == nil || !strings.Contains(err.Error(), "readinesProbe") {
		t.Fatalf("a misspelled field was not refused: %v", err)
	}
}

// TestK8sNATSValues checks the Helm values for the NATS chart parse and
// ask for what orderly needs: three clustered nodes with JetStream.
func TestK8sNATSValues(t *testing.T) {
	data, err := os.ReadFile("k8s/nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Container struct {
			Image struct {
				Tag string `yaml:"tag"`
			} `yaml:"image"`
		} `yaml:"container"`
		Config struct {
			Cluster struct {
				Enabled  bool `yaml:"enabled"`
				Replicas int  `yaml:"replicas"`
			} `yaml:"cluster"`
			JetStream struct {
				Enabled bool           `yaml:"enabled"`
				Merge   map[string]any `yaml:"merge"`
			} `yaml:"jetstream"`
		} `yaml:"config"`
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3 || !v.Config.JetStream.Enabled {
		t.Errorf("nats-values.yaml: not a 3-node JetStream cluster: %+v", v.Config)
	}
	if v.Config.JetStream.Merge["sync_interval"] != "always" {
		t.Errorf("nats-values.yaml: JetStream does not fsync every write")
	}
	// One consumer per host on the orders stream: nats-server caps a
	// stream's consumers at 1,000 unless this says -1.
	if limits, _ := v.Config.JetStream.Merge["limits"].(map[string]any); limits["default_max_consumers"] != -1 {
		t.Errorf("nats-values.yaml: jetstream limits %v, want default_max_consumers: -1", v.Config.JetStream.Merge["limits"])
	}
	// orderly rewinds consumers with a reset, which nats-server has since
	// 2.14 (the chart's default image may be older).
	var major, minor int
	if _, err := fmt.Sscanf(v.Container.Image.Tag, "%d.%d", &major, &minor); err != nil || major < 2 || major == 2 && minor < 14 {
		t.Errorf("nats-values.yaml: image tag %q, want nats-server 2.14 or later", v.Container.Image.Tag)
	}
}

func metaOf(obj any) metav1.ObjectMeta {
	switch v := obj.(type) {
	case *corev1.Namespace:
		return v.ObjectMeta
	case *corev1.ConfigMap:
		return v.ObjectMeta
	case *corev1.Service:
		return v.ObjectMeta
	case *appsv1.Deployment:
		return v.ObjectMeta
	case *appsv1.DaemonSet:
		return v.ObjectMeta
	case *batchv1.Job:
		return v.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		return v.ObjectMeta
	}
	return metav1.ObjectMeta{}
}

// checkSelector fails when a workload's selector does not select its own
// pods (the API server refuses such a Deployment or DaemonSet).
func checkSelector(t *testing.T, o k8sObject, sel *metav1.LabelSelector, podLabels map[string]string) {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() || !s.Matches(labels.Set(podLabels)) {
		t.Errorf("%s: selector %v does not select the pod labels %v (%v)", o.file, sel, podLabels, err)
	}
}

// checkPod fails when a pod may run as root or has no image.
func checkPod(t *testing.T, o k8sObject, spec corev1.PodSpec) {
	t.Helper()
	sc := spec.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("%s: pod may run as root", o.file)
	}
	// Secret files belong to root: a non-root pod reads them through
	// fsGroup, so they must be readable by the group.
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			continue
		}
		if sc == nil || sc.FSGroup == nil {
			t.Errorf("%s: secret volume %s, but no fsGroup to read it by", o.file, v.Name)
		}
		if m := v.Secret.DefaultMode; m == nil || *m&0o040 == 0 {
			t.Errorf("%s: secret volume %s is not readable by the pod's group", o.file, v.Name)
		}
	}
	if len(spec.Containers) == 0 {
		t.Fatalf("%s: pod without containers", o.file)
	}
	for _, c := range spec.Containers {
		if c.Image == "" {
			t.Errorf("%s: container %s without image", o.file, c.Name)
		}
		// Kubernetes never updates a ConfigMap's or Secret's file mounted
		// with subPath: the config's drift check and reload would not see
		// an edit (docs/config.md, "Reload and integrity").
		for _, m := range c.VolumeMounts {
			i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
			if i >= 0 && (spec.Volumes[i].ConfigMap != nil || spec.Volumes[i].Secret != nil) && m.SubPath != "" {
				t.Errorf("%s: container %s mounts %s with subPath %s, which never sees an update", o.file, c.Name, m.Name, m.SubPath)
			}
		}
	}
}
