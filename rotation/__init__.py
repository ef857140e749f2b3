"""apim-token-rotator: keeps APIM self-hosted gateway tokens fresh in every cluster that runs them."""
