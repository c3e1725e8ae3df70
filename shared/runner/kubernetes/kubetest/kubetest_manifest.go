package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// ManifestError is the refusal of one document of a manifest, by the
// decoder or by the server.
type ManifestError struct {
	Doc       int // 1-based position in the file, counting empty documents
	Kind      string
	Namespace string
	Name      string
	Err       error
}

func (e *ManifestError) Error() string {
	what := e.Kind
	if e.Namespace != "" {
		what += " " + e.Namespace + "/" + e.Name
	} else if e.Name != "" {
		what += " " + e.Name
	}
	if what == "" {
		return fmt.Sprintf("document %d: %v", e.Doc, e.Err)
	}
	return fmt.Sprintf("document %d (%s): %v", e.Doc, what, e.Err)
}

func (e *ManifestError) Unwrap() error { return e.Err }

// ValidateManifests sends each object of a multi-document YAML (or JSON)
// manifest to the server as a server-side dry-run create with strict field
// validation: the server runs defaulting, validation and admission, and
// unknown or duplicate fields are errors, but nothing is stored. It
// returns the errors of all refused documents joined, each a
// *ManifestError, or nil.
//
// With namespace set, every namespaced object is validated in that
// namespace whatever its metadata.namespace says (which must exist for
// anything but a dry run of its own Namespace object, and the objects are
// not stored); with "" the manifest's own namespaces are used ("default"
// when unset). Objects that depend on others in the same manifest (a
// custom resource of a CRD it defines) are refused, as nothing is stored.
func ValidateManifests(ctx context.Context, cfg *rest.Config, namespace string, manifest []byte) error {
	return sendManifests(ctx, cfg, namespace, manifest, true)
}

// ApplyManifests creates each object of a manifest for real (e.g. the
// ServiceAccount, Role and RoleBinding a test then acts with), in order,
// with the same namespace rule and errors as ValidateManifests. Objects
// that already exist are errors.
func ApplyManifests(ctx context.Context, cfg *rest.Config, namespace string, manifest []byte) error {
	return sendManifests(ctx, cfg, namespace, manifest, false)
}

func sendManifests(ctx context.Context, cfg *rest.Config, namespace string, manifest []byte, dryRun bool) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating discovery client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating dynamic client: %w", err)
	}
	opts := metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}

	var errs []error
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for doc := 1; ; doc++ {
		var obj unstructured.Unstructured
		err := dec.Decode(&obj.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The decoder cannot resynchronise after a syntax error.
			errs = append(errs, &ManifestError{Doc: doc, Err: fmt.Errorf("decoding: %w", err)})
			break
		}
		if len(obj.Object) == 0 {
			continue // an empty document, e.g. after a leading ---
		}
		if err := sendObject(ctx, dyn, mapper, &obj, namespace, opts); err != nil {
			errs = append(errs, &ManifestError{
				Doc: doc, Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName(), Err: err,
			})
		}
	}
	return errors.Join(errs...)
}

func sendObject(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, obj *unstructured.Unstructured, namespace string, opts metav1.CreateOptions) error {
	gvk := obj.GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return errors.New("apiVersion and kind are required")
	}
	mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("finding the resource for %s: %w", gvk, err)
	}
	var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if namespace != "" {
			obj.SetNamespace(namespace)
		} else if obj.GetNamespace() == "" {
			obj.SetNamespace("default")
		}
		ri = dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
	}
	_, err = ri.Create(ctx, obj, opts)
	return err
}
