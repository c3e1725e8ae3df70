package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
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
// that already exist are errors. Roles and bindings are in effect when it
// returns (the RBAC authorizer has seen them).
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
	rbacIn := map[string]bool{} // namespaces ("" cluster-wide) given RBAC objects
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
		} else if !dryRun && obj.GroupVersionKind().Group == rbacv1.GroupName {
			rbacIn[obj.GetNamespace()] = true
		}
	}
	if len(errs) == 0 {
		for ns := range rbacIn {
			if err := awaitRBAC(ctx, cfg, ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// awaitRBAC returns once the server's RBAC authorizer has seen every role
// and binding created so far in ns ("" for cluster roles and bindings). The
// authorizer answers from watch caches that trail the writes, so a test that
// acts right after applying a Role could be denied by a cache that has not
// caught up. A sentinel role and binding are created after them, and their
// grant is asked for until it holds: each kind's cache sees its objects in
// the order they were written, so by then it has the earlier ones too.
func awaitRBAC(ctx context.Context, cfg *rest.Config, ns string) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating clientset: %w", err)
	}
	name := fmt.Sprintf("kubetest-sentinel-%d", sentinels.Add(1))
	const user, resource = "kubetest:sentinel", "kubetest-sentinels"
	rules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{resource}, ResourceNames: []string{name}, Verbs: []string{"get"}}}
	subjects := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	om := metav1.ObjectMeta{Name: name}
	if ns == "" {
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: om, Rules: rules}, metav1.CreateOptions{})
		if err == nil {
			_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: om, Subjects: subjects,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}}, metav1.CreateOptions{})
		}
	} else {
		_, err = cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: om, Rules: rules}, metav1.CreateOptions{})
		if err == nil {
			_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: om, Subjects: subjects,
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}}, metav1.CreateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("creating the RBAC sentinel %s: %w", name, err)
	}
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: resource, Name: name}}}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("asking whether the RBAC sentinel %s is in effect: %w", name, err)
		}
		if got.Status.Allowed {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the RBAC authorizer never saw the roles just created (sentinel %s): %w", name, ctx.Err())
		case <-tick.C:
		}
	}
}

var sentinels atomic.Int64

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
