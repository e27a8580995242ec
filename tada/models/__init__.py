"""Networks: backbones, gradient reversal, discriminators, attention and the TADA network."""
