package client_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/orderly-run/orderly/api/client"
)

// The examples read the API's address and token from ORDERLY_URL and
// ORDERLY_TOKEN, as a program would. They need a running orderly with a
// worker for host web-1, so `go test` only compiles them; TestExamples
// runs each against a real server and checks what it prints.

// Submit an order and wait for it to finish.
func Example() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("ORDERLY_URL"), os.Getenv("ORDERLY_TOKEN"))
	if err != nil {
		fmt.Println(err)
		return
	}
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "echo", Args: []string{"hello"}},
		client.SubmitOptions{Wait: 30 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := sub.Order.Result.Stdout.Decode()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %s", sub.Order.Status, out)
	// Prints:
	// succeeded: hello
}

// Follow an order's output live until it finishes. Follow reconnects
// with Last-Event-ID when the connection drops, so nothing is lost or
// repeated, and polls when the API has no event stream.
func ExampleClient_Follow() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("ORDERLY_URL"), os.Getenv("ORDERLY_TOKEN"))
	if err != nil {
		fmt.Println(err)
		return
	}
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "web-1", Command: "sh", Args: []string{"-c", "echo step 1; sleep 0.2; echo step 2; exit 3"}},
		client.SubmitOptions{IdempotencyKey: "deploy-web-1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	final, err := c.Follow(ctx, sub.Order.ID.String(), client.FollowOptions{Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(final.Status, "with exit code", *final.Result.ExitCode)
	// Prints:
	// step 1
	// step 2
	// failed with exit code 3
}

// Iterate over every order that matches a filter; pages are read as the
// loop goes on.
func ExampleClient_Orders() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("ORDERLY_URL"), os.Getenv("ORDERLY_TOKEN"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for o, err := range c.Orders(ctx, client.ListOptions{Host: "web-1", Limit: 1}) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(o.Status, o.Command, strings.Join(o.Args, " "))
	}
	// Prints (newest first):
	// failed sh -c echo step 1; sleep 0.2; echo step 2; exit 3
	// succeeded echo hello
}

// Cancel an order that has not started (its host has no worker).
func ExampleClient_Cancel() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("ORDERLY_URL"), os.Getenv("ORDERLY_TOKEN"))
	if err != nil {
		fmt.Println(err)
		return
	}
	sub, err := c.Submit(ctx, client.SubmitRequest{Host: "db-9", Command: "true"}, client.SubmitOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	o, err := c.Cancel(ctx, sub.Order.ID.String(), "SIGTERM")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(o.Status, "by", o.Cancel.Actor)
	// Prints:
	// canceled by alice
}

// Refusals are *client.Error values with the API's stable code.
func ExampleErrorCode() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("ORDERLY_URL"), os.Getenv("ORDERLY_TOKEN"))
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = c.Get(ctx, "0193a5c4-8a9e-7c1e-9f3a-2b6d4e8f0a1c")
	switch client.ErrorCode(err) {
	case client.CodeNotFound:
		fmt.Println("no such order")
	case "":
		fmt.Println("found it, or could not ask:", err)
	default:
		fmt.Println("refused:", err)
	}
	// Prints:
	// no such order
}

// List the hosts that are online now.
func ExampleClient_Hosts() {
	ctx := context.Background()
	c, err := client.New(os.Getenv("ORDERLY_URL"), os.Getenv("ORDERLY_TOKEN"))
	if err != nil {
		fmt.Println(err)
		return
	}
	list, err := c.Hosts(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, h := range list.Hosts {
		if h.Online {
			fmt.Println(h.Host, "is online")
		}
	}
	// Prints:
	// web-1 is online
}

// TestExamples runs every example against a real orderly (PostgreSQL,
// NATS, the API and a worker for web-1) and checks what it prints.
func TestExamples(t *testing.T) {
	s := newServer(t, "web-1")
	t.Setenv("ORDERLY_URL", s.url)
	t.Setenv("ORDERLY_TOKEN", s.tokens["alice"])
	waitOnline(t, s, "web-1")
	for _, ex := range []struct {
		name string
		run  func()
		want string
	}{
		{"Example", Example, "succeeded: hello\n"},
		{"ExampleClient_Follow", ExampleClient_Follow, "step 1\nstep 2\nfailed with exit code 3\n"},
		{"ExampleClient_Orders", ExampleClient_Orders, "failed sh -c echo step 1; sleep 0.2; echo step 2; exit 3\nsucceeded echo hello\n"},
		{"ExampleClient_Cancel", ExampleClient_Cancel, "canceled by alice\n"},
		{"ExampleErrorCode", ExampleErrorCode, "no such order\n"},
		{"ExampleClient_Hosts", ExampleClient_Hosts, "web-1 is online\n"},
	} {
		if got := captureStdout(t, ex.run); got != ex.want {
			t.Errorf("%s printed\n%q\nwant\n%q", ex.name, got, ex.want)
		}
	}
}

// captureStdout runs f with os.Stdout going to a pipe and returns what it
// wrote.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	defer func() { os.Stdout = saved }()
	f()
	os.Stdout = saved
	w.Close()
	return <-done
}

// waitOnline waits until host's worker has announced itself.
func waitOnline(t *testing.T, s *server, host string) {
	t.Helper()
	c := newClient(t, s, "alice")
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, err := c.Hosts(t.Context())
		if err == nil {
			for _, h := range list.Hosts {
				if h.Host == host && h.Online {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("host %s never came online: %v", host, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
