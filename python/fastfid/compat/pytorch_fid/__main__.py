from fastfid.compat.pytorch_fid.fid_score import main

main()
