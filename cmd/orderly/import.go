package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// importCommand is `orderly import <tool> FILE`: convert another tool's
// config into an orderly config on stdout, with what could not be mapped
// on stderr.
func (a *app) importCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "import", Short: "Convert another tool's configuration into an orderly config"}
	var host string
	vigrid := &cobra.Command{
		Use:   "vigrid FILE",
		Short: "Convert a Vigrid Shell API YAML config (tokens hashed, rules, ACL, compat.vigrid) into an orderly config on stdout",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read vigrid config: %w", err)
			}
			if host == "" {
				host = defaultHost()
			}
			out, notes, err := convertVigrid(src, args[0], host)
			if err != nil {
				return err
			}
			if _, err := a.stdout.Write(out); err != nil {
				return err
			}
			for _, n := range notes {
				fmt.Fprintln(a.stderr, "not mapped:", n)
			}
			return nil
		},
	}
	vigrid.Flags().StringVar(&host, "host", "", "worker host id the Vigrid surface runs orders on (default: the short hostname)")
	cmd.AddCommand(vigrid)
	return cmd
}
