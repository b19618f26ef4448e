"""Per-profile secrets: encrypted at rest, referenced as `${secret:NAME}` by that profile's
configs only, decrypted in the run layer for exactly the run that references them."""
