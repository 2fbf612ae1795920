package stock

import (
	_ "embed"
	"encoding/json"
	"fmt"
)

// seedJSON is the stock a new file starts with: every catalog product, as a
// JSON array of {"product_id", "available"} sorted by id. It is data, so
// changing the range is a data change, not a code change.
//
//go:embed seed_stock.json
var seedJSON []byte

// SeedLevels parses the embedded seed; an error means the file is broken,
// which the package's tests catch before any build ships.
func SeedLevels() ([]Level, error) {
	var rows []struct {
		ProductID string `json:"product_id"`
		Available int32  `json:"available"`
	}
	if err := json.Unmarshal(seedJSON, &rows); err != nil {
		return nil, fmt.Errorf("seed_stock.json: %w", err)
	}
	seen := make(map[string]bool, len(rows))
	levels := make([]Level, 0, len(rows))
	for i, row := range rows {
		if err := checkID("product_id", row.ProductID); err != nil || seen[row.ProductID] || row.Available < 0 {
			return nil, fmt.Errorf("seed_stock.json: entry %d (%q) is invalid or repeated", i, row.ProductID)
		}
		seen[row.ProductID] = true
		levels = append(levels, Level{ProductID: row.ProductID, Available: row.Available})
	}
	return levels, nil
}
