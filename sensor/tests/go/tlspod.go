// A TLS "pod" for podcap's tests (Go's crypto/tls, whose secrets podcap's uprobe reads).
//
//	tlspod server ADDR                 HTTPS on ADDR, a self-signed certificate made at start
//	tlspod client URL COUNT BODY       COUNT POSTs of BODY to URL, each on a new connection
//
// With PODCAP_TEST_KEYLOG set, the client also writes its own key log there, so the test
// knows which sessions it made.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func certificate() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	template := x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pod"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, &template, &template, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func serve(addr string) {
	listener, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{certificate()}})
	if err != nil {
		panic(err)
	}
	fmt.Println("listening")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "seen %s %d\n", r.URL.Path, len(body))
	})
	panic(http.Serve(listener, handler))
}

func ask(url string, count int, body string) {
	config := &tls.Config{InsecureSkipVerify: true}
	if path := os.Getenv("PODCAP_TEST_KEYLOG"); path != "" {
		file, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			panic(err)
		}
		defer file.Close()
		config.KeyLogWriter = file
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: config, DisableKeepAlives: true},
	}
	for i := 0; i < count; i++ {
		response, err := client.Post(url, "text/plain", strings.NewReader(body))
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		answer, _ := io.ReadAll(response.Body)
		response.Body.Close()
		fmt.Print(string(answer))
	}
}

func main() {
	switch os.Args[1] {
	case "server":
		serve(os.Args[2])
	case "client":
		count, err := strconv.Atoi(os.Args[3])
		if err != nil {
			panic(err)
		}
		ask(os.Args[2], count, os.Args[4])
	}
}
