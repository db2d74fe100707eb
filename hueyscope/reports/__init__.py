"""Static HTML reports rendered from one or more event stores."""
