package main

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/orderly-run/orderly/internal/auth"
	"github.com/orderly-run/orderly/internal/config"
)

func (a *app) tokenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage API tokens"}
	var name string
	var roles []string
	newCmd := &cobra.Command{
		Use:   "new",
		Short: "Print a new token and the config lines that accept it (only the hash goes in the config)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, sum := auth.NewToken()
			entry := config.Token{Name: name, SHA256: sum, Roles: roles}
			// The lines printed must load as they are: the same checks
			// as the config's, and YAML quoting where a name needs it.
			if strings.TrimSpace(name) == "" {
				return fmt.Errorf("--name must not be empty")
			}
			if _, err := auth.New(config.Auth{Tokens: []config.Token{entry}}, nil); err != nil {
				return err
			}
			lines, err := tokenYAML(entry)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "token: %s\n\n# add to auth.tokens in the config file:\n%s", tok, lines)
			return nil
		},
	}
	newCmd.Flags().StringVar(&name, "name", "client", "principal name")
	newCmd.Flags().StringSliceVar(&roles, "role", nil, "role (repeatable)")
	cmd.AddCommand(newCmd)
	return cmd
}

// tokenYAML is t as an item of auth.tokens, indented under it.
func tokenYAML(t config.Token) (string, error) {
	type entry struct {
		Name   string   `yaml:"name"`
		SHA256 string   `yaml:"sha256"`
		Roles  []string `yaml:"roles,flow"`
	}
	item := []entry{{Name: t.Name, SHA256: t.SHA256, Roles: t.Roles}}
	if item[0].Roles == nil {
		item[0].Roles = []string{}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(item); err != nil {
		return "", err
	}
	var out strings.Builder
	for _, line := range strings.SplitAfter(buf.String(), "\n") {
		if line != "" {
			out.WriteString("  " + line)
		}
	}
	return out.String(), nil
}
