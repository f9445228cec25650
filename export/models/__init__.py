"""Model families exported by edgetrim beyond the Hugging Face vision towers."""
