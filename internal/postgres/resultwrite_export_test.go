package postgres

import (
	"context"

	"github.com/google/uuid"
)

// StageOutputsFrom exports stageOutputsFrom to the tests.
const StageOutputsFrom = stageOutputsFrom

// CompleteUnstaged is Complete through its single statement whatever the
// outputs' size: the path every output below StageOutputsFrom takes, for
// comparing the streamed path with it.
func (s *Store) CompleteUnstaged(ctx context.Context, id uuid.UUID, attempt int, f Finish) error {
	args, err := completeArgs(id, attempt, f)
	if err != nil {
		return err
	}
	var n int
	if err := s.pool.QueryRow(ctx, completeSQL, args...).Scan(&n); err != nil {
		return translate("complete order "+id.String(), err)
	}
	return completed(id, attempt, n)
}
