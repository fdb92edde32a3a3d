"""The fast tier: the tests `bash scripts/test.sh --fast` runs (`pytest -m "fast and not slow"`),
the core in under a minute while working; the whole suite (`bash scripts/test.sh`, CI) runs
everything. What it covers and what it leaves out: docs/development.md.

conftest.py marks `fast` every test that an entry names: a file ("test_engine.py"), a test
("test_cli.py::test_bad_flags", every case of it) or one case
("test_stack.py::test_runs_of_a_stack_are_their_solo_runs[reference-30steps-batch8]").
A parametrized sweep runs one or two cases here (the reference design, every switch changed)
and all of them in the whole suite. tests/test_fast_tier.py checks that every entry still
names a test of the tier."""

FAST = (
    # the model's math, both modes
    "test_engine.py",
    "test_tensor_ops.py",
    "test_tensor_batching.py",
    "test_tensor_options.py",
    "test_data.py",
    "test_reference.py::test_first_steps_of_the_reference_run",
    "test_reference.py::test_scalar_mode_follows_the_naive_graph[reference]",
    "test_reference.py::test_scalar_mode_follows_the_naive_graph[all]",
    # parity, scalar against tensor: the reference design and every switch changed
    "test_tensor_parity.py::test_training_steps_match_scalar_mode[reference-1]",
    "test_tensor_parity.py::test_training_steps_match_scalar_mode[all-2]",
    "test_tensor_parity.py::test_logits_and_eval_loss_match_scalar_mode[reference-2]",
    "test_tensor_parity.py::test_logits_and_eval_loss_match_scalar_mode[all-1]",
    "test_tensor_parity.py::test_train_step_matches_scalar_train_step[reference]",
    "test_tensor_parity.py::test_train_step_matches_scalar_train_step[all]",
    "test_tensor_parity.py::test_fifty_steps_on_names_match_scalar_mode[reference]",
    "test_tensor_parity.py::test_fifty_steps_on_names_match_scalar_mode[all]",
    "test_tensor_parity.py::test_z_loss_steps_match_scalar_mode[reference-document]",
    "test_tensor_parity.py::test_z_loss_steps_match_scalar_mode[all-token]",
    "test_tensor_parity.py::test_diagnostics_match_the_naive_model",
    "test_interop.py::test_resume_in_the_other_mode",
    "test_interop.py::test_sample_a_checkpoint_in_either_mode",
    # optimizer, schedule, dropout, the settings' declarations
    "test_optim.py",
    "test_muon.py",
    "test_settings.py",
    "test_softcap_init.py",
    # stacks
    "test_stack.py::test_runs_of_a_stack_are_their_solo_runs[reference-30steps-batch8]",
    "test_stack.py::test_runs_of_a_stack_are_their_solo_runs[qk_norm=True-30steps-batch1]",
    "test_stack.py::test_token_loss_average",
    "test_stack.py::test_keep_runs_drops_runs_and_the_others_go_on",
    "test_stack.py::test_run_model_is_the_solo_run",
    "test_stack.py::test_low_precision_stacks_stay_close_to_their_solo_runs",
    "test_stack.py::test_a_diverging_run_leaves_its_neighbours_alone",
    "test_stack.py::test_a_stack_refuses_runs_that_differ_in_more_than_seed_and_learning_rate",
    "test_stack.py::test_a_stack_takes_runs_that_differ_in_seed_learning_rate_and_min_lr",
    "test_stack.py::test_a_stack_refuses_mismatched_or_no_runs",
    "test_stack.py::test_a_stack_steps_adam_in_chunks_each_run_at_its_own_rate",
    "test_stack.py::test_runs_diverging_at_different_steps_leave_a_stack_in_order",
    "test_train.py::test_a_stacks_halves_and_diagnostics_are_its_runs_alone",
    # training
    "test_train.py::test_loss_falls_on_a_tiny_dataset",
    "test_train.py::test_two_runs_are_bit_identical",
    "test_train.py::test_resume_continues_exactly",
    "test_train.py::test_checkpoint_round_trip",
    "test_train.py::test_in_a_study_a_non_finite_loss_is_recorded_not_raised",
    "test_train.py::test_lr_decays_linearly_to_zero",
    "test_train.py::test_metrics_file_has_every_step_and_a_summary",
    "test_train.py::test_a_checkpoint_without_lrs_or_evals_still_reads",
    "test_train.py::test_input_file_is_remembered_for_resume",
    "test_train.py::test_keep_best_needs_out",
    "test_stream.py",
    # the statistics
    "test_ablate_stats.py",
    "test_sweep.py",
    # results: their schemas
    "test_ablate.py::test_json_schema",
    "test_ablate.py::test_csv_schema",
    "test_ablate.py::test_table_schema",
    # a study: its plan, workers, resume, stacks (against --no-stack); learning-rate sweeps
    "test_ablate.py::test_plans_full_and_one_at_a_time",
    "test_ablate.py::test_vary_parses_switches_and_numbers",
    "test_ablate.py::test_default_vary_is_the_seeds_four_designs_in_their_order",
    "test_ablate.py::test_every_switch_can_vary",
    "test_ablate.py::test_vary_z_loss_is_a_number_that_may_be_zero",
    "test_ablate.py::test_baseline_is_the_first_listed_value_when_the_reference_is_left_out",
    "test_ablate.py::test_every_design_sees_the_same_seeds_and_data_order",
    "test_ablate.py::test_tied_design_has_vocab_times_embd_fewer_parameters",
    "test_ablate.py::test_numeric_levels_cross_every_design",
    "test_ablate.py::test_dry_run_prints_the_plan_and_trains_nothing",
    "test_ablate.py::test_dry_run_shows_the_stacks",
    "test_ablate.py::test_settings_name_the_code_that_computes_the_runs",
    "test_ablate.py::test_default_out_is_derived_from_the_settings",
    "test_ablate.py::test_jobs_1_and_2_give_identical_results",
    "test_ablate.py::test_resume_reuses_finished_runs_unchanged",
    "test_ablate.py::test_stacks_that_would_not_fit_in_memory_are_split_with_a_line",
    "test_ablate.py::test_tensor_mode_tiny",
    "test_ablate.py::test_a_stacked_study_gives_each_run_as_alone",
    "test_ablate.py::test_a_diverged_run_ends_alone_and_its_stack_goes_on",
    "test_lr_sweep.py::test_best_lr_and_sensitivity_through_the_report_by_hand",
    "test_lr_sweep.py::test_the_page_shows_the_sweep_as_results_json_has_it",
    "test_lr_sweep.py::test_old_results_without_a_sweep_still_read",
    "test_lr_sweep.py::test_a_diverged_run_is_recorded_and_the_study_goes_on",
    "test_lr_sweep.py::test_the_halves_split_the_held_out_documents",
    "test_lr_sweep.py::test_diagnostics_are_in_every_tensor_run",
    "test_lr_sweep.py::test_the_report_rewrites_the_sweep_page",
    "test_lr_sweep.py::test_a_run_alone_records_its_divergence_too",
    "test_lr_sweep.py::test_z_loss_varied_in_a_sweep_stacks_and_resumes",
    "test_lr_sweep.py::test_dry_run_shows_the_sweeps_stacks",
    "test_lr_sweep.py::test_bad_sweeps_exit_2_with_one_line_before_any_run",
    # the page
    "test_report_html.py::test_every_cell_of_every_table_equals_results_json",
    "test_report_html.py::test_the_printed_report_shows_the_rows_of_the_page",
    "test_report_html.py::test_report_rewrites_the_same_page_from_results_json_alone",
    "test_report_html.py::test_bad_study_folders_give_one_line_errors",
    "test_report_html.py::test_a_bad_folder_fails_in_one_line_without_a_traceback",
    "test_report_html.py::test_ablate_writes_the_page_and_prints_its_path_last",
    "test_report_html.py::test_every_plot_decodes_and_equals_its_file",
    "test_report_html.py::test_every_text_is_escaped",
    "test_report_html.py::test_the_page_is_self_contained",
    "test_report_html.py::test_settings_and_environment_are_shown",
    "test_report_html.py::test_without_matplotlib_the_page_says_so",
    # the command line's errors
    "test_cli.py",
    "test_ablate.py::test_bad_flags_exit_2_with_one_line",
    "test_recipe.py::test_bad_recipes_are_one_line_errors",
    "test_recipe.py::test_bundled_recipes_parse_and_every_key_is_a_flag",
    "test_recipe.py::test_flags_override_the_recipe",
    "test_recipe.py::test_missing_recipe_and_file",
    "test_distributed.py::test_shares_are_contiguous_and_cover_the_batch",
    "test_distributed.py::test_the_world_comes_from_torchruns_variables",
    "test_distributed.py::test_one_process_without_torchrun_imports_no_torch_distributed",
    "test_distributed.py::test_written_files_follow_the_umask",
    # the docs: links and the command-line reference (not their commands)
    "test_docs.py::test_the_command_line_reference_is_up_to_date",
    "test_docs.py::test_every_relative_link_leads_somewhere",
    "test_docs.py::test_anchors_follow_githubs_rules",
    "test_docs.py::test_markers_pair_with_commands",
    "test_docs.py::test_the_front_page_has_a_worked_example_of_every_command",
    "test_docs.py::test_the_front_page_shows_the_reference_run",
    "test_docs.py::test_the_reference_picks_up_new_commands_and_flags",
    "test_fast_tier.py",
)


def selects(entry: str, test_id: str) -> bool:
    """Whether `entry` of FAST names `test_id` ("test_x.py::test_name[case]")."""
    return test_id == entry or test_id.startswith((entry + "::", entry + "["))
