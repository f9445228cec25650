"""Model families: layout, weight loading with explicit key maps, presets. No export knowledge."""
