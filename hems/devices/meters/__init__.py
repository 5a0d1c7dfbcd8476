"""Smart meters' local interfaces: DSMR P1 and the GB Glow CAD, plus half-hour intervals."""
