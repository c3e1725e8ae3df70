package kubetest

import (
	"context"
	"errors"
	"fmt"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ServiceAccountConfig returns a client config that authenticates as the
// ServiceAccount ns/name with a token the server issues for it
// (TokenRequest), as a pod running under that account would; the
// ServiceAccount must exist. Under RBAC it may do what its Roles allow.
func (s *Server) ServiceAccountConfig(ctx context.Context, ns, name string) (*rest.Config, error) {
	tr, err := s.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for service account %s/%s: %w", ns, name, err)
	}
	return s.configWithToken(tr.Status.Token), nil
}

// CheckAccess asks the server whether the user of cfg may do each of
// attrs (SelfSubjectAccessReview, so the real authorizer answers) and
// returns an error listing those it may not, or nil. Under AlwaysAllow
// everything is allowed.
//
//	err := kubetest.CheckAccess(ctx, saCfg,
//		authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods"},
//		authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "pods", Subresource: "log"})
func CheckAccess(ctx context.Context, cfg *rest.Config, attrs ...authorizationv1.ResourceAttributes) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating clientset: %w", err)
	}
	var denied []string
	for _, a := range attrs {
		review, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &a},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("reviewing access to %s: %w", describeAttrs(a), err)
		}
		if !review.Status.Allowed {
			d := describeAttrs(a)
			if r := review.Status.Reason; r != "" {
				d += " (" + r + ")"
			}
			denied = append(denied, d)
		}
	}
	if len(denied) > 0 {
		return fmt.Errorf("%w: %s", ErrDenied, strings.Join(denied, "; "))
	}
	return nil
}

// ErrDenied is wrapped by CheckAccess when something is not allowed.
var ErrDenied = errors.New("access denied")

func describeAttrs(a authorizationv1.ResourceAttributes) string {
	res := a.Resource
	if a.Group != "" {
		res += "." + a.Group
	}
	if a.Subresource != "" {
		res += "/" + a.Subresource
	}
	if a.Name != "" {
		res += " " + a.Name
	}
	where := "cluster-wide"
	if a.Namespace != "" {
		where = "in namespace " + a.Namespace
	}
	return fmt.Sprintf("%s %s %s", a.Verb, res, where)
}

// WriteKubeconfig writes a kubeconfig file with one context for cfg's
// server, CA and bearer token, e.g. for a ServiceAccountConfig, so that
// code that reads $KUBECONFIG acts as that user.
func WriteKubeconfig(path string, cfg *rest.Config) error {
	c := clientcmdapi.NewConfig()
	c.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	c.AuthInfos["kubetest"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	c.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest"}
	c.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*c, path); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return nil
}
