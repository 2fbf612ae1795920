package stock

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The catalog owns the product list; the inventory must stock exactly it.
const catalogSeed = "../../../catalog/catalog/seed_products.json"

func TestSeedMatchesCatalog(t *testing.T) {
	levels, err := SeedLevels()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.FromSlash(catalogSeed))
	if os.IsNotExist(err) {
		t.Skip("catalog seed not beside this module:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var products []struct{ ID string }
	if err := json.Unmarshal(raw, &products); err != nil {
		t.Fatal(err)
	}
	want := make([]string, len(products))
	for i, p := range products {
		want[i] = p.ID
	}
	slices.Sort(want)
	got := make([]string, len(levels))
	for i, level := range levels {
		got[i] = level.ProductID
	}
	if !slices.Equal(got, want) {
		t.Errorf("seed ids (sorted as in the file) differ from the catalog's:\n got %v\nwant %v", got, want)
	}
}

func TestSeedUnits(t *testing.T) {
	levels, err := SeedLevels()
	if err != nil {
		t.Fatal(err)
	}
	// Fixed by the demo and the end-to-end tests; the rest just vary.
	fixed := map[string]int32{"prod-espresso-machine": 2, "prod-teapot-cast-iron": 10}
	for _, level := range levels {
		want, ok := fixed[level.ProductID]
		switch {
		case ok && level.Available != want:
			t.Errorf("%s: %d units, want %d", level.ProductID, level.Available, want)
		case !ok && (level.Available < 20 || level.Available > 200):
			t.Errorf("%s: %d units, want 20..200", level.ProductID, level.Available)
		}
	}
}
