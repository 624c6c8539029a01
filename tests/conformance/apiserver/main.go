// Command conformance-apiserver runs the real Kubernetes CustomResourceDefinition API server
// (k8s.io/apiextensions-apiserver, backed by etcd) for the conformance tier of interp-operator.
//
// The upstream main of k8s.io/apiextensions-apiserver is written to run behind kube-apiserver's
// aggregator, so on its own it cannot serve a test client:
//
//   - it delegates authentication and authorization to a core API server (TokenReview,
//     SubjectAccessReview) that does not exist here;
//   - its /readyz waits for a core/v1 Services informer that never syncs;
//   - it disables root discovery (/apis answers 404; the aggregator serves it in a cluster);
//   - it serves only /openapi/v3.
//
// This wrapper keeps every API code path of the real server (storage, validation, CEL,
// defaulting, pruning, subresources, watch, server-side apply) and changes only the pieces above:
//
//   - a single local user: a random bearer token, written with the serving CA into a kubeconfig
//     (--write-kubeconfig), authenticated as "conformance-admin" in group system:masters; every
//     other request is unauthenticated and denied;
//   - no core API: no core informers, no admission plugins, no API priority and fairness;
//     conversion webhooks resolve services by cluster DNS name;
//   - root discovery (/apis, legacy and aggregated) re-enabled, with the groups of established
//     CRDs kept in the legacy group list by a CRD event handler; /api lists no versions (no core/v1);
//   - /openapi/v2 served next to /openapi/v3, so kubectl's client-side validation works.
//
// Run it with the upstream flags (--etcd-servers, --secure-port, --cert-dir, ...); with
// --secure-port=0 it binds a free port and the kubeconfig names it.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"

	"github.com/spf13/pflag"
	noopoteltrace "go.opentelemetry.io/otel/trace/noop"

	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	generatedopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	netutils "k8s.io/utils/net"
)

const adminUser = "conformance-admin"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "conformance-apiserver: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o := options.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)
	fs := pflag.NewFlagSet("conformance-apiserver", pflag.ContinueOnError)
	o.AddFlags(fs)
	kubeconfigPath := fs.String("write-kubeconfig", "", "where to write the admin kubeconfig (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kubeconfigPath == "" {
		return fmt.Errorf("--write-kubeconfig is required")
	}
	if err := o.ServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}

	// Nothing to delegate to: authn/authz are set below, and admission and APF need core informers.
	o.RecommendedOptions.Authentication = nil
	o.RecommendedOptions.Authorization = nil
	o.RecommendedOptions.CoreAPI = nil
	o.RecommendedOptions.Admission = nil
	o.RecommendedOptions.Features.EnablePriorityAndFairness = false

	if err := listenOnFreePort(o); err != nil {
		return err
	}
	if err := o.Complete(); err != nil {
		return err
	}
	if err := o.Validate(); err != nil {
		return err
	}
	token, err := randomToken()
	if err != nil {
		return err
	}
	config, err := buildConfig(o, token)
	if err != nil {
		return err
	}

	completed := config.Complete()
	// apiextensions turns root discovery off because kube-apiserver's aggregator serves it.
	completed.GenericConfig.EnableDiscovery = true
	server, err := completed.New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}
	if err := syncLegacyDiscovery(server); err != nil {
		return err
	}
	server.GenericAPIServer.Handler.NonGoRestfulMux.Handle("/api", http.HandlerFunc(serveNoLegacyVersions))
	if err := writeKubeconfig(*kubeconfigPath, o, config.GenericConfig.SecureServing.Listener.Addr(), token); err != nil {
		return err
	}
	ctx := genericapiserver.SetupSignalContext()
	return server.GenericAPIServer.PrepareRun().RunWithContext(ctx)
}

// buildConfig mirrors options.Config() of the upstream server, minus the core API dependencies.
func buildConfig(o *options.CustomResourceDefinitionsServerOptions, token string) (*apiserver.Config, error) {
	loopbackIP := netutils.ParseIPSloppy("127.0.0.1")
	if err := o.RecommendedOptions.SecureServing.MaybeDefaultWithSelfSignedCerts(
		"localhost", nil, []net.IP{loopbackIP}); err != nil {
		return nil, fmt.Errorf("creating self-signed certificates: %w", err)
	}
	serverConfig := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := o.ServerRunOptions.ApplyTo(&serverConfig.Config); err != nil {
		return nil, err
	}
	if err := o.RecommendedOptions.ApplyTo(serverConfig); err != nil {
		return nil, err
	}
	if err := o.APIEnablement.ApplyTo(&serverConfig.Config, apiserver.DefaultAPIResourceConfigSource(),
		apiserver.Scheme); err != nil {
		return nil, err
	}

	admin := map[string]*user.DefaultInfo{
		token: {Name: adminUser, UID: adminUser, Groups: []string{user.AllAuthenticated, user.SystemPrivilegedGroup}},
	}
	serverConfig.Authentication.Authenticator = authenticatorfactory.NewFromTokens(admin, nil)
	serverConfig.Authorization.Authorizer = authorizerfactory.NewPrivilegedGroups(user.SystemPrivilegedGroup)
	// The server's own controllers (CRD Established/NamesAccepted status) call it over loopback.
	genericapiserver.AuthorizeClientBearerToken(serverConfig.LoopbackClientConfig,
		&serverConfig.Authentication, &serverConfig.Authorization)

	definitions := openapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions)
	namer := openapinamer.NewDefinitionNamer(apiserver.Scheme, scheme.Scheme)
	serverConfig.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(definitions, namer)
	serverConfig.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(definitions, namer)

	return &apiserver.Config{
		GenericConfig: serverConfig,
		ExtraConfig: apiserver.ExtraConfig{
			CRDRESTOptionsGetter: options.NewCRDRESTOptionsGetter(*o.RecommendedOptions.Etcd,
				serverConfig.ResourceTransformers, serverConfig.StorageObjectCountTracker),
			ServiceResolver: webhook.NewDefaultServiceResolver(),
			AuthResolverWrapper: webhook.NewDefaultAuthenticationInfoResolverWrapper(
				nil, nil, serverConfig.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}, nil
}

// syncLegacyDiscovery keeps one APIGroup entry per CRD group in the legacy /apis list. (The
// aggregated form is already fed by the apiextensions discovery controller.)
func syncLegacyDiscovery(server *apiserver.CustomResourceDefinitions) error {
	informer := server.Informers.Apiextensions().V1().CustomResourceDefinitions()
	lister := informer.Lister()
	groups := server.GenericAPIServer.DiscoveryGroupManager
	refresh := func(obj interface{}) {
		if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tombstone.Obj
		}
		crd, ok := obj.(*apiextensionsv1.CustomResourceDefinition)
		if !ok {
			return
		}
		all, err := lister.List(labels.Everything())
		if err != nil {
			return
		}
		if group, served := groupOf(crd.Spec.Group, all); served {
			groups.AddGroup(group)
		} else {
			groups.RemoveGroup(crd.Spec.Group)
		}
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    refresh,
		UpdateFunc: func(_, obj interface{}) { refresh(obj) },
		DeleteFunc: refresh,
	})
	return err
}

// serveNoLegacyVersions answers /api truthfully (no core/v1 here) instead of 404, so that clients that scan every
// group (client-go discovery, kopf) see an empty legacy group rather than an error.
func serveNoLegacyVersions(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(metav1.APIVersions{
		TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
		Versions: []string{},
	})
}

// groupOf lists the served versions of the established CRDs of one group, highest priority first
// (the order kube-apiserver uses, so PreferredVersion matches a real cluster).
func groupOf(name string, crds []*apiextensionsv1.CustomResourceDefinition) (metav1.APIGroup, bool) {
	seen := map[string]bool{}
	for _, crd := range crds {
		if crd.Spec.Group != name || !apihelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established) {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if v.Served {
				seen[v.Name] = true
			}
		}
	}
	if len(seen) == 0 {
		return metav1.APIGroup{}, false
	}
	versions := make([]string, 0, len(seen))
	for v := range seen {
		versions = append(versions, v)
	}
	sort.Slice(versions, func(i, j int) bool {
		return version.CompareKubeAwareVersionStrings(versions[i], versions[j]) > 0
	})
	group := metav1.APIGroup{Name: name}
	for _, v := range versions {
		group.Versions = append(group.Versions, metav1.GroupVersionForDiscovery{GroupVersion: name + "/" + v, Version: v})
	}
	group.PreferredVersion = group.Versions[0]
	return group, true
}

func writeKubeconfig(path string, o *options.CustomResourceDefinitionsServerOptions, addr net.Addr, token string) error {
	ca, err := servingCertificate(o)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["conformance"] = &clientcmdapi.Cluster{
		Server:                   "https://" + addr.String(),
		CertificateAuthorityData: ca,
	}
	cfg.AuthInfos[adminUser] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["conformance"] = &clientcmdapi.Context{Cluster: "conformance", AuthInfo: adminUser, Namespace: "default"}
	cfg.CurrentContext = "conformance"
	// Written to a temporary name and renamed, so a reader never sees half a kubeconfig.
	tmp := path + ".tmp"
	if err := clientcmd.WriteToFile(*cfg, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// servingCertificate returns the self-signed serving chain (certificate and its CA) for the kubeconfig.
func servingCertificate(o *options.CustomResourceDefinitionsServerOptions) ([]byte, error) {
	serverCert := o.RecommendedOptions.SecureServing.ServerCert
	if serverCert.GeneratedCert != nil {
		cert, _ := serverCert.GeneratedCert.CurrentCertKeyContent()
		return cert, nil
	}
	return os.ReadFile(serverCert.CertKey.CertFile)
}

// listenOnFreePort binds --bind-address:0 when --secure-port=0 (upstream would then not serve at
// all), so the caller needs no free-port guess that can race with other processes.
func listenOnFreePort(o *options.CustomResourceDefinitionsServerOptions) error {
	serving := o.RecommendedOptions.SecureServing
	if serving.BindPort != 0 || serving.Listener != nil {
		return nil
	}
	listener, err := net.Listen("tcp", net.JoinHostPort(serving.BindAddress.String(), "0"))
	if err != nil {
		return err
	}
	serving.Listener = listener
	serving.BindPort = listener.Addr().(*net.TCPAddr).Port
	return nil
}

func randomToken() (string, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(buf), nil
}
