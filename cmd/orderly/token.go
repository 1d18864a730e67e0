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
	var name, replaces string
	var roles []string
	newCmd := &cobra.Command{
		Use:   "new",
		Short: "Print a new token and the config lines that accept it (only the hash goes in the config)",
		Example: `  orderly token new --name ci --role ops
  orderly token new --name ci --role ops --replaces <ci's sha256 now>   # rotate ci's token, keeping the principal`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, sum := auth.NewToken()
			entry := config.Token{Name: name, SHA256: sum, PreviousSHA256: strings.ToLower(strings.TrimSpace(replaces)), Roles: roles}
			// The lines printed must load as they are: the same checks
			// as the config's, and YAML quoting where a name needs it.
			if strings.TrimSpace(name) == "" {
				return fmt.Errorf("--name must not be empty")
			}
			if _, err := auth.New(config.Auth{Tokens: []config.Token{entry}}, nil); err != nil {
				if entry.PreviousSHA256 != "" && strings.Contains(err.Error(), "previous_sha256") {
					return fmt.Errorf("--replaces: %w (give the sha256 of the token's entry now, 64 hex characters)", err)
				}
				return err
			}
			lines, err := tokenYAML(entry)
			if err != nil {
				return err
			}
			if entry.PreviousSHA256 == "" {
				fmt.Fprintf(a.stdout, "token: %s\n\n# add to auth.tokens in the config file:\n%s", tok, lines)
				return nil
			}
			fmt.Fprintf(a.stdout, "token: %s\n\n# replace the entry of %s in auth.tokens with these lines and reload: both tokens are %s;\n"+
				"# once its client uses the new token, remove previous_sha256 and reload: the old token is refused.\n%s", tok, name, name, lines)
			return nil
		},
	}
	newCmd.Flags().StringVar(&name, "name", "client", "principal name")
	newCmd.Flags().StringSliceVar(&roles, "role", nil, "role (repeatable)")
	newCmd.Flags().StringVar(&replaces, "replaces", "", "the sha256 of the token this one replaces (the entry's previous_sha256 during a rotation)")
	cmd.AddCommand(newCmd)
	return cmd
}

// tokenYAML is t as an item of auth.tokens, indented under it.
func tokenYAML(t config.Token) (string, error) {
	type entry struct {
		Name           string   `yaml:"name"`
		SHA256         string   `yaml:"sha256"`
		PreviousSHA256 string   `yaml:"previous_sha256,omitempty"`
		Roles          []string `yaml:"roles,flow"`
	}
	item := []entry{{Name: t.Name, SHA256: t.SHA256, PreviousSHA256: t.PreviousSHA256, Roles: t.Roles}}
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
