package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/orderly-run/orderly/internal/auth"
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
			fmt.Fprintf(a.stdout, "token: %s\n\n# add to auth.tokens in the config file:\n  - name: %s\n    sha256: %s\n    roles: [%s]\n",
				tok, name, sum, strings.Join(roles, ", "))
			return nil
		},
	}
	newCmd.Flags().StringVar(&name, "name", "client", "principal name")
	newCmd.Flags().StringSliceVar(&roles, "role", nil, "role (repeatable)")
	cmd.AddCommand(newCmd)
	return cmd
}
