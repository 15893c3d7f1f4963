"""The tenant's public signup page: packages with "Signup Server" on, details, card on signup,
then invoice and activation per the package's options."""

REGISTRARS = ("views",)
