"""impetusctl: the command-line client of impetusd."""
