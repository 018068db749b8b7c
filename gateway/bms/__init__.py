"""BMS side: one pure codec per BMS protocol, and drivers that pair a codec with a transport."""
