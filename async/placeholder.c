int async_placeholder;
